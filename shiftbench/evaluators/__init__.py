"""Evaluation: a model's predictions over (locations x objects) as one jitted program per chunk shape, the
location-map metrics, and the shift-metric evaluators named in `eval.metrics` (big_vision style).

Contract: above `models`, `data`, `rows`, `infra`; never sees the config system. The evaluator classes are
importable as `shiftbench.evaluators.<Name>`, the `_target_` paths configs (and their comparison keys) use.
"""

from shiftbench.evaluators.suite import (
  EvalContext,
  Evaluator,
  FlipRate,
  ShiftConsistency,
  Similarity,
  WorstCase,
  result_key,
  run_all,
  sweep_paths,
)

__all__ = [
  "EvalContext",
  "Evaluator",
  "FlipRate",
  "ShiftConsistency",
  "Similarity",
  "WorstCase",
  "result_key",
  "run_all",
  "sweep_paths",
]
