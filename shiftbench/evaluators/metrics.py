"""Invariance metrics, exactly as defined in docs/metrics.md; pure `jnp` functions, jit-able.

Notation: acc(p) is accuracy with every test object at location p, c = 1/K is chance, p_ft the
fine-tune location, G the test grid and G_off the grid points farther (Chebyshev distance, i.e. per
axis) than the training jitter r from p_ft.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def location_accuracy(predictions: jax.Array, labels: jax.Array) -> jax.Array:
  """acc(p) for every location: (L, N) predictions and (N,) labels -> (L,) accuracies."""
  return jnp.mean(jnp.asarray(predictions) == jnp.asarray(labels)[None, :], axis=1)


def off_location_mask(grid: jax.Array, location: tuple[int, int], radius: int) -> jax.Array:
  """G_off: grid points whose per-axis distance to `location` exceeds the training jitter `radius`."""
  dist = jnp.max(jnp.abs(jnp.asarray(grid) - jnp.asarray(location)[None, :]), axis=1)
  return dist > radius


def location_index(grid: jax.Array, location: tuple[int, int]) -> jax.Array:
  """Index of `location` in the grid (the grid must contain it; see `canvas.location_grid`)."""
  return jnp.argmax(jnp.all(jnp.asarray(grid) == jnp.asarray(location)[None, :], axis=1))


# The invariance score is defined only when in-location accuracy is significantly above chance
# (one-sided binomial test over the test objects at p_ft): a ratio over a denominator that is noise
# (0.17 accuracy against a chance of 0.10 on 200 objects) would print any number at all.
SIGNIFICANCE = 0.01


def binomial_pvalue(correct: jax.Array, n: int, chance: float) -> jax.Array:
  """One-sided p-value P(X >= correct) for X ~ Binomial(n, chance): the chance that guessing scores at
  least `correct` of `n`. Uses P(X >= k) = I_chance(k, n - k + 1), the regularised incomplete beta."""
  k = jnp.asarray(correct, jnp.float32)
  tail = jax.scipy.special.betainc(jnp.maximum(k, 1.0), jnp.maximum(n - k + 1.0, 1.0), chance)
  return jnp.where(k <= 0, 1.0, tail)


def invariance_score(
  in_acc: jax.Array, off_acc: jax.Array, chance: float, num_objects: int | None = None, alpha: float = SIGNIFICANCE
) -> jax.Array:
  """(off - c) / (in - c): 1 = as good everywhere as at p_ft, 0 = chance off-location.

  Undefined (NaN) when in-location accuracy is at or below chance, or, given the number of test objects
  at p_ft, not significantly above it (one-sided binomial test, p >= `alpha`): then nothing was learned
  to transfer, and the ratio would be noise over noise.
  """
  denom = in_acc - chance
  defined = denom > 0
  if num_objects is not None:
    defined = defined & (binomial_pvalue(jnp.round(in_acc * num_objects), num_objects, chance) < alpha)
  return jnp.where(defined, (off_acc - chance) / jnp.where(denom > 0, denom, 1.0), jnp.nan)


def summarize_location_map(
  acc_map: jax.Array,
  grid: jax.Array,
  location: tuple[int, int],
  radius: int,
  num_classes: int,
  num_objects: int | None = None,
) -> dict[str, jax.Array]:
  """in-location accuracy, off-location accuracy (mean over G_off) and the invariance score; with
  `num_objects` (test objects per location) also the binomial p-value of in-location accuracy, and the
  score is undefined unless that p-value is below `SIGNIFICANCE`."""
  acc_map = jnp.asarray(acc_map)
  mask = off_location_mask(grid, location, radius)
  in_acc = acc_map[location_index(grid, location)]
  off_acc = jnp.sum(jnp.where(mask, acc_map, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
  off_acc = jnp.where(jnp.any(mask), off_acc, jnp.nan)
  chance = 1.0 / num_classes
  invariance = invariance_score(in_acc, off_acc, chance)
  if num_objects is None:
    return {"in_acc": in_acc, "off_acc": off_acc, "invariance": invariance}
  # The test `invariance_score(..., num_objects)` applies, with its p-value computed once and reported.
  pvalue = binomial_pvalue(jnp.round(in_acc * num_objects), num_objects, chance)
  return {
    "in_acc": in_acc,
    "off_acc": off_acc,
    "in_pvalue": pvalue,
    "invariance": jnp.where(pvalue < SIGNIFICANCE, invariance, jnp.nan),
  }


def worst_case_accuracy(predictions: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of objects classified correctly at *every* location (Engstrom et al. 2019).

  Args:
    predictions: (L, N) predicted classes, one row per location of the test grid.
    labels: (N,) true classes.
  """
  correct = jnp.asarray(predictions) == jnp.asarray(labels)[None, :]
  return jnp.mean(jnp.all(correct, axis=0))


def worst_of_k_accuracy(key: jax.Array, predictions: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """Fraction of objects correct at all of k locations drawn per object, uniformly with replacement.

  The cheap version of the worst case used when the full map is too expensive; it reads the (L, N) map
  so both numbers come from the same forward passes. `k` must be a Python int (it sets a shape).
  """
  predictions = jnp.asarray(predictions)
  n_loc, n_obj = predictions.shape
  picks = jax.random.randint(key, (k, n_obj), 0, n_loc)
  chosen = jnp.take_along_axis(predictions, picks, axis=0)  # (k, N)
  return jnp.mean(jnp.all(chosen == jnp.asarray(labels)[None, :], axis=0))


def path_flips(predictions: jax.Array) -> jax.Array:
  """(S, N) predictions along a path -> (S - 1, N) flags: did step s -> s + 1 change the prediction."""
  predictions = jnp.asarray(predictions)
  return predictions[1:] != predictions[:-1]
