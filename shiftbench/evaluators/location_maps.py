"""Predictions over (locations x objects), as one jitted program per chunk shape.

A location map needs only a few reductions of the (L locations x N objects) correctness, and
`location_stats` computes them on the device, chunk by chunk: per-location correct counts (the map),
per-object "correct everywhere" flags (worst-case accuracy) and, given the fine-tune location, each
object's correct count away from it and whether it is correct at it (the test set's sampling error in the
claims, `shiftbench.claims.objects`). The (L, N) predictions never exist: at 224 px
with a 1-px grid and 10k objects they would be ~1 GB of int32. `predict_grid` still returns (L, N)
predictions for short paths (flip rate) and `predict_at` one prediction per (object, location) pair.
Objects and locations are processed in fixed-size chunks (padded at the end, `shiftbench.evaluators.chunks`) so the
jitted programs compile once per model and chunk shape. Every path takes a `Predictor`: the model in eval
mode, made once per model state.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from shiftbench.evaluators.chunks import chunk_shape, map_chunks, pad_to
from shiftbench.evaluators.predictor import Forward, Predictor


def _predictions_on_grid(model: Forward, objects: jax.Array, locations: jax.Array) -> jax.Array:
  """objects (B,h,w,C) uint8, locations (L,2) -> (L, B) predicted classes."""
  return jnp.argmax(model.on_grid(objects, locations), -1).astype(jnp.int32)


def predict_grid(predictor: Predictor, objects: jax.Array, locations: np.ndarray, batch_size: int = 4096) -> np.ndarray:
  """Predicted class of every object at every location.

  Args:
    predictor: the model in eval mode.
    objects: (N, h, w, C) uint8 objects, ideally already on the device.
    locations: (L, 2) int top-left coordinates, all valid.
    batch_size: canvases per forward pass; chunks are (batch_size // object_chunk) locations x objects.

  Returns:
    (L, N) int32 numpy array of predicted classes.
  """
  fn = predictor.jit(_predictions_on_grid)
  loc_chunk, obj_chunk = chunk_shape(int(locations.shape[0]), int(objects.shape[0]), batch_size)
  row = lambda locs: map_chunks(lambda objs: fn(objs, locs), [objects], obj_chunk, axis=1)
  return np.asarray(map_chunks(row, [np.asarray(locations, np.int32)], loc_chunk))


@dataclasses.dataclass(frozen=True)
class GridStats:
  """What a location map keeps of (L, N) correctness: `correct` (L,) counts, `everywhere` (N,) flags and
  `predicted` (K,) flags of the classes predicted anywhere (a constant predictor predicts one); given the
  fine-tune location, `off_correct` (N,) each object's correct count over every other location (G_off at
  radius 0, the locations `off_acc` averages) and `in_correct` (N,) bool, correct at it (else None)."""

  correct: np.ndarray
  everywhere: np.ndarray
  predicted: np.ndarray
  off_correct: np.ndarray | None = None
  in_correct: np.ndarray | None = None

  def accuracy(self) -> np.ndarray:
    return self.correct / max(1, self.everywhere.shape[0])


# What each location of a chunk is to the per-object counts: a padded repeat (counted nowhere), away from the
# fine-tune location, or the fine-tune location itself.
PADDED, OFF, AT = 0, 1, 2


def _chunk_stats(
  model: Forward, objects: jax.Array, labels: jax.Array, valid: jax.Array, locations: jax.Array, roles: jax.Array
) -> tuple[jax.Array, ...]:
  """objects, labels, valid (B,) bool, locations (L,2), roles (L,) `PADDED`/`OFF`/`AT` -> ((L,) correct
  counts, (B,) all correct, (K,) classes predicted, (B,) correct off-location counts, (B,) correct at `AT`)."""
  logits = model.on_grid(objects, locations)
  pred = jnp.argmax(logits, -1)
  correct = pred == labels[None, :]
  # Padded locations repeat a real one, so only padded objects need masking out of the class set.
  predicted = jnp.any(jax.nn.one_hot(pred, logits.shape[-1], dtype=bool) & valid[None, :, None], axis=(0, 1))
  off = jnp.sum(correct & (roles == OFF)[:, None], axis=0, dtype=jnp.int32)
  at = jnp.any(correct & (roles == AT)[:, None], axis=0)
  counts = jnp.sum(correct & valid[None, :], axis=1, dtype=jnp.int32)
  return counts, jnp.all(correct, axis=0), predicted, off, at


def location_stats(
  predictor: Predictor,
  objects: jax.Array,
  labels: jax.Array,
  locations: np.ndarray,
  batch_size: int = 4096,
  at: int | None = None,
) -> GridStats:
  """Per-location correct counts and per-object correct-at-every-location flags, reduced on the device;
  with `at`, also each object's correct count off that location and whether it is correct at it.

  The same chunks and forward passes as `predict_grid`, so `GridStats.accuracy()` equals
  `metrics.location_accuracy(predict_grid(...), labels)`; only (L + 3N) numbers leave the device.
  Padded locations repeat the last one (no effect on "everywhere"; counted in no per-object count); padded
  objects are masked out of counts and cut off.

  Args:
    predictor: the model in eval mode.
    objects: (N, h, w, C) uint8 objects, ideally already on the device.
    labels: (N,) int labels.
    locations: (L, 2) int top-left coordinates, all valid.
    batch_size: canvases per forward pass.
    at: the index in `locations` of the fine-tune location, for the per-object counts (None: none kept).

  Returns:
    The map's `GridStats`.
  """
  fn = predictor.jit(_chunk_stats)
  n_obj, n_loc = int(objects.shape[0]), int(locations.shape[0])
  loc_chunk, obj_chunk = chunk_shape(n_loc, n_obj, batch_size)
  objs, labs = pad_to(objects, obj_chunk), pad_to(jnp.asarray(labels, jnp.int32), obj_chunk)
  valid = jnp.arange(objs.shape[0]) < n_obj
  locs = pad_to(np.asarray(locations, np.int32), loc_chunk)
  roles = np.where(np.arange(locs.shape[0]) < n_loc, OFF, PADDED).astype(np.int32)
  if at is not None:
    roles[at] = AT
  n_chunks = range(0, objs.shape[0], obj_chunk)
  counts, everywhere = [], [jnp.ones(obj_chunk, bool) for _ in n_chunks]
  off = [jnp.zeros(obj_chunk, jnp.int32) for _ in n_chunks]
  at_ok = [jnp.zeros(obj_chunk, bool) for _ in n_chunks]
  predicted = False
  for i in range(0, locs.shape[0], loc_chunk):
    total = jnp.zeros(loc_chunk, jnp.int32)
    for c, j in enumerate(n_chunks):
      n, ok, seen, o, a = fn(
        objs[j : j + obj_chunk],
        labs[j : j + obj_chunk],
        valid[j : j + obj_chunk],
        locs[i : i + loc_chunk],
        roles[i : i + loc_chunk],
      )
      total, everywhere[c], predicted = total + n, everywhere[c] & ok, predicted | seen
      off[c], at_ok[c] = off[c] + o, at_ok[c] | a
    counts.append(total)
  per_object = lambda parts: np.asarray(jnp.concatenate(parts))[:n_obj]  # noqa: E731
  return GridStats(
    np.asarray(jnp.concatenate(counts))[:n_loc],
    per_object(everywhere),
    np.asarray(predicted),
    None if at is None else per_object(off),
    None if at is None else per_object(at_ok),
  )


def _predictions_at(model: Forward, objects: jax.Array, locations: jax.Array) -> jax.Array:
  """objects (B,h,w,C) uint8, locations (B,2) -> (B,) predicted classes, object i at location i."""
  return jnp.argmax(model.on_canvas(objects, locations), -1).astype(jnp.int32)


def predict_at(
  predictor: Predictor, objects: jax.Array, locations: jax.Array | np.ndarray, batch_size: int = 4096
) -> np.ndarray:
  """Predicted class of object i at location i, chunked.

  Args:
    predictor: the model in eval mode.
    objects: (M, h, w, C) uint8 objects.
    locations: (M, 2) int top-left coordinates, all valid.
    batch_size: canvases per forward pass.

  Returns:
    (M,) int32 numpy array of predicted classes.
  """
  fn = predictor.jit(_predictions_at)
  return np.asarray(map_chunks(fn, [objects, jnp.asarray(locations, jnp.int32)], batch_size))
