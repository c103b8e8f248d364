"""A row's per-object test results (`per_object`): for each of B's evaluated objects, in test-object order,
how many grid locations away from the fine-tune location it is classified correctly at (G_off, the
locations `off_acc` averages) and whether it is correct at the fine-tune location. Enough to recompute
`in_acc`, `off_acc` and the invariance score on any resample of the test objects: the claims' bootstrap
over objects (`shiftbench.claims.objects`). Rows written before it existed have none.

No jax here: the claims read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

FIELD = "per_object"


class PerObject(NamedTuple):
  """One row's per-object results: `off_correct` (N,) ints in 0..`off_locations`, `in_correct` (N,) 0/1."""

  off_correct: np.ndarray
  in_correct: np.ndarray
  off_locations: int

  @property
  def objects(self) -> int:
    return int(self.off_correct.shape[0])

  def off_acc(self) -> float:
    """`off_acc` recomputed: the mean over objects of the share of G_off each is correct at."""
    return float(self.off_correct.sum() / (self.objects * self.off_locations))

  def in_acc(self) -> float:
    return float(self.in_correct.mean())


def record(off_correct: np.ndarray, in_correct: np.ndarray, off_locations: int) -> dict[str, Any]:
  """The row's `per_object` value: plain ints, so results.json stays compact."""
  return {
    "off_locations": int(off_locations),
    "off_correct": np.asarray(off_correct, np.int64).tolist(),
    "in_correct": np.asarray(in_correct, np.int64).tolist(),
  }


def of(row: Mapping[str, Any]) -> PerObject | None:
  """The row's per-object results; None for a row without them (written before they existed), or whose
  arrays disagree in length or have no off-location grid point."""
  found = row.get(FIELD)
  if not isinstance(found, Mapping):
    return None
  off, at = np.asarray(found.get("off_correct", []), np.int64), np.asarray(found.get("in_correct", []), np.int64)
  n_off = int(found.get("off_locations") or 0)
  if off.ndim != 1 or off.shape != at.shape or not off.size or n_off < 1:
    return None
  return PerObject(off, at, n_off)
