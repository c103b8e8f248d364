"""Fine-tuning methods: how the pretrained model becomes B's model, one row per method and setting.

One module per idea: `base` (what a method is, the context a row runs in), then one per method: `plain`,
`lpft` (LP-FT), `wise` (WiSE-FT), `l2sp` (L2-SP under Adam), `replay`, `ewc` (EWC), `surgical` (surgical
fine-tuning), `soup` (a uniform model soup), `wise_lpft` (WiSE-FT along LP-FT's probe -> LP-FT),
`l2sp_decoupled` (L2-SP, the pull after the optimiser), `l2sp_sgd` (L2-SP under SGD). `BUILTIN` is the
registry of the methods a `finetune.methods` entry may name; `register` adds one. The methods are importable as
`shiftbench.methods.<Name>`, the `_target_` paths their comparison keys hold (`target`).

Contract: above `training`, `models`, `data`, `rows`, `infra`; never sees the config system.
"""

from __future__ import annotations

from shiftbench.methods.base import (
  Context,
  Finetuned,
  FunctionMethod,
  Method,
  Pretraining,
  as_finetuned,
  as_method,
  check_grid,
  copy_model,
)
from shiftbench.methods.ewc import EWC, EWCState, fisher_diagonal
from shiftbench.methods.l2sp import L2SP, L2SPState, l2sp_penalty
from shiftbench.methods.l2sp_decoupled import L2SPDecoupled, decoupled_pull
from shiftbench.methods.l2sp_sgd import L2SPSGD
from shiftbench.methods.lpft import LPFT
from shiftbench.methods.plain import Plain
from shiftbench.methods.replay import Replay
from shiftbench.methods.soup import Soup, uniform_soup
from shiftbench.methods.surgical import Surgical
from shiftbench.methods.wise import WiSEFT, interpolate
from shiftbench.methods.wise_lpft import WiSELPFT

# The methods a `finetune.methods` entry may name, by their rows' `finetune_method`.
BUILTIN: dict[str, type[Method]] = {m.name: m for m in (Plain, LPFT, WiSEFT, L2SP, Replay, EWC, Surgical, Soup)}
BUILTIN[WiSELPFT.name] = WiSELPFT
BUILTIN.update({m.name: m for m in (L2SPDecoupled, L2SPSGD)})


def register(cls: type[Method]) -> type[Method]:
  """Makes `cls` a method `finetune.methods` may name (`cls.name`), as the built-ins are; usable as a
  class decorator. Registering another class under a name already taken is an error."""
  if not (isinstance(cls, type) and issubclass(cls, Method)) or not cls.name:
    raise TypeError(f"register takes a Method subclass with a name, got {cls!r}")
  if BUILTIN.get(cls.name, cls) is not cls:
    raise ValueError(f"a method named {cls.name!r} is registered already ({target(BUILTIN[cls.name])})")
  BUILTIN[cls.name] = cls
  return cls


def target(cls: type[Method]) -> str:
  """The `_target_` a registered method is built from, which its rows' comparison keys hold: the
  package's own `shiftbench.methods.<Name>` (the path 0.6.0's keys hold) for a class exported here, else
  the class's module path."""
  if globals().get(cls.__name__) is cls:
    return f"{__name__}.{cls.__name__}"
  return f"{cls.__module__}.{cls.__qualname__}"


__all__ = [
  "BUILTIN",
  "EWC",
  "L2SP",
  "L2SPDecoupled",
  "L2SPSGD",
  "LPFT",
  "Context",
  "EWCState",
  "Finetuned",
  "FunctionMethod",
  "L2SPState",
  "Method",
  "Plain",
  "Pretraining",
  "Replay",
  "Soup",
  "Surgical",
  "WiSEFT",
  "WiSELPFT",
  "as_finetuned",
  "as_method",
  "check_grid",
  "copy_model",
  "decoupled_pull",
  "fisher_diagonal",
  "interpolate",
  "l2sp_penalty",
  "register",
  "target",
  "uniform_soup",
]
