"""The test set's sampling error in a paired difference, by a bootstrap over objects.

Every seed of every arm of a protocol group is evaluated on the same test objects (a fixed, class-balanced
prefix of B's test split), so the seeds' spread never includes the error of having drawn these objects
(~0.01 on one accuracy at 500 objects). Where a claim compares two arms on the same objects, row by row
(`Measured`: a seed's value with the row it was read from, whose `per_object` results say how each object
fared, `shiftbench.rows.per_object`), `paired_error` resamples the object indices with replacement: the
same indices for both arms and every seed, since all saw the same objects. Each replicate recomputes each
arm's metric per seed from the per-object results (`off_acc`; `in_acc`; `invariance` = (off - chance) /
(in - chance), as `shiftbench.evaluators.metrics` defines it; a replicate whose in-location accuracy falls
to chance is left out) and takes the mean over seeds of the paired difference; `se_obj` is its standard
deviation over `REPLICATES` replicates, drawn from a fixed seed (the same numbers on every read). The verdicts
widen the seed t-interval by it (`verdicts.interval`). Rows without per-object results (written by older
versions: the shipped reference rows among them) keep the seed-only interval, and the claim's note says so.
No jax here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from shiftbench.rows import per_object
from shiftbench.rows.per_object import PerObject

REPLICATES = 2000  # B: the se's own relative error is ~1/sqrt(2B), under 2%
SEED = 20211011  # the replicates' fixed draw
PER_OBJECT_METRICS = ("off_acc", "in_acc", "invariance")  # what the per-object results recompute
NO_ROWS_DATA = "test-set sampling error not included: rows without per-object data"
NOT_SAME_OBJECTS = "test-set sampling error not included: the arms were not evaluated on the same objects"


class Replicates:
  """Each row's `off_acc` and `in_acc` on every replicate, for the rows of one comparable group: computed
  for all of them together on first use (one matrix product per test-set size: the claims share rows, and
  one product stays fast where a BLAS that spreads each small product over busy cores does not)."""

  def __init__(self, rows: list[Mapping[str, Any]]):
    self._rows = rows  # held: the table below is keyed by their ids
    self._table: dict[int, tuple[PerObject, np.ndarray, np.ndarray]] | None = None

  def of(self, row: Mapping[str, Any]) -> tuple[PerObject, np.ndarray, np.ndarray] | None:
    """The row's per-object results and its (REPLICATES,) off_acc and in_acc; None where it has none."""
    if self._table is None:
      self._table = {}
      found = [(id(r), p) for r in self._rows if (p := per_object.of(r)) is not None]
      for n in sorted({p.objects for _, p in found}):
        same = [(key, p) for key, p in found if p.objects == n]
        x = np.stack([v for _, p in same for v in (p.off_correct / p.off_locations, p.in_correct)], axis=1)
        sums = replicate_weights(n) @ x.astype(np.float64) / n  # (REPLICATES, 2 rows)
        self._table.update({key: (p, sums[:, 2 * i], sums[:, 2 * i + 1]) for i, (key, p) in enumerate(same)})
    return self._table.get(id(row))


class Measured(dict):
  """seed -> value (None: undefined), like `verdicts.Series`, read off rows of one arm for `metric`: `rows`
  holds each seed's row, and `replicates` their values on the resampled objects (`paired_error`)."""

  def __init__(
    self,
    values: Mapping[int, float | None],
    metric: str,
    rows: Mapping[int, Mapping[str, Any]],
    replicates: Replicates,
  ):
    super().__init__(values)
    self.metric, self.rows, self.replicates = metric, dict(rows), replicates

  def like(self, values: Mapping[int, float | None]) -> Measured:
    """Other values (e.g. with collapsed seeds set to None) of the same rows and metric."""
    return Measured(values, self.metric, self.rows, self.replicates)


class Error(NamedTuple):
  """A paired difference's test-set sampling error: `se` (None where it could not be computed) and, then,
  the note that says why."""

  se: float | None
  note: str = ""


def paired_error(a: Any, b: Any, seeds: list[int]) -> Error:
  """The bootstrap se over objects of mean_seeds(a - b) over `seeds` (the module docstring). No error and no
  note where either side was not read off rows (`Measured`) or its metric is not one the per-object results
  recompute; the seed-only interval with a note where a row lacks them or the arms saw other objects."""
  if not (isinstance(a, Measured) and isinstance(b, Measured)) or not seeds or a.metric != b.metric:
    return Error(None)
  if a.metric not in PER_OBJECT_METRICS:
    return Error(None, f"test-set sampling error not included: no per-object data for {a.metric}")
  rows = [(side.rows[s], side.replicates) for s in seeds for side in (a, b)]
  found = [replicates.of(r) for r, replicates in rows]
  if any(f is None for f in found):
    return Error(None, NO_ROWS_DATA)
  # One test set: as many objects as every row says it evaluated, of one split.
  kinds = {(f[0].objects, r.get("test_objects", f[0].objects), r.get("eval_split")) for f, (r, _) in zip(found, rows)}
  if len(kinds) != 1 or len(set(next(iter(kinds))[:2])) != 1:
    return Error(None, NOT_SAME_OBJECTS)
  values = [_replicated(off, at, a.metric, r.get("chance")) for (_, off, at), (r, _) in zip(found, rows)]
  diff = np.mean([values[2 * i] - values[2 * i + 1] for i in range(len(seeds))], axis=0)
  diff = diff[np.isfinite(diff)]
  if diff.size < 2:
    return Error(None, f"test-set sampling error not included: {a.metric} undefined in the replicates")
  return Error(float(diff.std(ddof=1)))


@functools.lru_cache(maxsize=2)
def replicate_weights(n: int) -> np.ndarray:
  """(REPLICATES, n): how many times each of n objects is drawn in each replicate (n indices drawn with
  replacement, counted), from the fixed seed; read-only, shared by every claim on n objects."""
  idx = np.random.default_rng(SEED).integers(0, n, (REPLICATES, n))
  counts = np.bincount((idx + n * np.arange(REPLICATES)[:, None]).ravel(), minlength=REPLICATES * n)
  weights = counts.reshape(REPLICATES, n).astype(np.float64)
  weights.flags.writeable = False
  return weights


def _replicated(off: np.ndarray, at: np.ndarray, metric: str, chance: float | None) -> np.ndarray:
  """(REPLICATES,) values of `metric` of one row from its replicates' off_acc and in_acc (NaN: undefined)."""
  if metric == "off_acc":
    return off
  if metric == "in_acc":
    return at
  if chance is None:
    return np.full(len(off), np.nan)
  denom = at - chance
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(denom > 0, (off - chance) / np.where(denom > 0, denom, 1.0), np.nan)
