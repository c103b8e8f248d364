"""Fine-tuning methods: how the pretrained model becomes B's model, one row per method and setting.

Contract: above `training`, `models`, `data`, `rows`, `infra`; never sees the config system. The methods are
importable as `shiftbench.methods.<Name>`, the `_target_` paths configs (and their comparison keys) use.
"""

from shiftbench.methods.builtin import (
  L2SP,
  LPFT,
  Context,
  Finetuned,
  FunctionMethod,
  L2SPState,
  Method,
  Plain,
  WiSEFT,
  as_finetuned,
  as_method,
  copy_model,
  interpolate,
  l2sp_penalty,
)

__all__ = [
  "L2SP",
  "LPFT",
  "Context",
  "Finetuned",
  "FunctionMethod",
  "L2SPState",
  "Method",
  "Plain",
  "WiSEFT",
  "as_finetuned",
  "as_method",
  "copy_model",
  "interpolate",
  "l2sp_penalty",
]
