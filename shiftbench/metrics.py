"""Invariance metrics, exactly as defined in DESIGN.md section 4; pure `jnp` functions, jit-able.

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


def invariance_score(in_acc: jax.Array, off_acc: jax.Array, chance: float) -> jax.Array:
  """(off - c) / (in - c): 1 = as good everywhere as at p_ft, 0 = chance off-location.

  Undefined (NaN) when in-location accuracy is at chance, since then nothing was learned to transfer.
  """
  denom = in_acc - chance
  return jnp.where(denom > 0, (off_acc - chance) / jnp.where(denom > 0, denom, 1.0), jnp.nan)


def summarize_location_map(acc_map: jax.Array, grid: jax.Array, location: tuple[int, int], radius: int,
                           num_classes: int) -> dict[str, jax.Array]:
  """in-location accuracy, off-location accuracy (mean over G_off) and the invariance score."""
  acc_map = jnp.asarray(acc_map)
  mask = off_location_mask(grid, location, radius)
  in_acc = acc_map[location_index(grid, location)]
  off_acc = jnp.sum(jnp.where(mask, acc_map, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
  off_acc = jnp.where(jnp.any(mask), off_acc, jnp.nan)
  return {"in_acc": in_acc, "off_acc": off_acc,
          "invariance": invariance_score(in_acc, off_acc, 1.0 / num_classes)}
