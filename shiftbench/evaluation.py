"""Predictions over (locations x objects), as one jitted program per chunk shape.

A location map needs only two reductions of the (L locations x N objects) correctness, and
`location_stats` computes them on the device, chunk by chunk: per-location correct counts (the map) and
per-object "correct everywhere" flags (worst-case accuracy). The (L, N) predictions never exist: at 224 px
with a 1-px grid and 10k objects they would be ~1 GB of int32. `predict_grid` still returns (L, N)
predictions for short paths (flip rate) and `predict_at` one prediction per (object, location) pair.
Objects and locations are processed in fixed-size chunks (padded at the end) so the jitted functions
compile once per model and chunk shape.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shiftbench import models

OBJECTS_PER_CHUNK = 16


def _balanced(n: int, chunk: int) -> int:
  """The smallest chunk that covers n in as many chunks as `chunk` does (least padding)."""
  return -(-n // -(-n // chunk))


def chunk_shape(n_loc: int, n_obj: int, batch_size: int) -> tuple[int, int]:
  """(locations, objects) per chunk: about `batch_size` canvases, as many locations as leave at least
  OBJECTS_PER_CHUNK objects (models that run their first block once per object and residue,
  `ShiftNet.on_grid`, share it across the chunk's locations), balanced so the padding is small."""
  loc_chunk = _balanced(n_loc, max(1, min(n_loc, batch_size // min(n_obj, OBJECTS_PER_CHUNK))))
  obj_chunk = _balanced(n_obj, max(1, min(n_obj, batch_size // loc_chunk)))
  return loc_chunk, obj_chunk


@functools.cache
def _predict_chunk_fn(graphdef: nnx.GraphDef, canvas_size: int):
  """(state, objects (B,h,w,C) uint8, locations (L,2)) -> (L, B) predicted classes. Cached per model."""

  def predict(state, objects, locations):
    model = nnx.merge(graphdef, state)
    logits = models.logits_on_grid(model, objects.astype(jnp.float32) / 255.0, locations, canvas_size)
    return jnp.argmax(logits, -1).astype(jnp.int32)

  return jax.jit(predict)


def pad_to(a: jax.Array | np.ndarray, multiple: int) -> jax.Array:
  """Pads axis 0 to a multiple of `multiple` by repeating the last entry (results are sliced off)."""
  n = a.shape[0]
  extra = (-n) % multiple
  if extra == 0:
    return jnp.asarray(a)
  return jnp.concatenate([jnp.asarray(a), jnp.repeat(jnp.asarray(a)[-1:], extra, axis=0)])


def map_chunks(fn: Callable[..., Any], arrays: Sequence[jax.Array | np.ndarray], chunk: int, axis: int = 0) -> Any:
  """`fn` over fixed-size chunks of axis 0 of `arrays`, its outputs joined along `axis` (any pytree of arrays).

  The one chunked predictor of the evaluation paths (location maps, point predictions, shift pairs,
  similarity): every array is padded to a multiple of the chunk (`pad_to`) so one compiled program serves
  every chunk, and the padded results are cut off. The outputs stay on the device until the caller reads
  them, so chunks are dispatched without waiting for each other.

  Args:
    fn: a jitted function of one chunk of each array.
    arrays: arrays of equal length n along axis 0.
    chunk: rows per call (clipped to 1..n).
    axis: the axis of each output that the chunks make up.
  """
  n = int(arrays[0].shape[0])
  chunk = max(1, min(n, chunk))
  padded = [pad_to(a, chunk) for a in arrays]
  parts = [fn(*(a[i : i + chunk] for a in padded)) for i in range(0, padded[0].shape[0], chunk)]
  cut = (slice(None),) * axis + (slice(0, n),)
  return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=axis)[cut], *parts)


def predict_grid(
  model: nnx.Module, objects: jax.Array, locations: np.ndarray, canvas_size: int, batch_size: int = 4096
) -> np.ndarray:
  """Predicted class of every object at every location.

  Args:
    model: the network; switched to eval mode (`model.eval()`: BatchNorm uses its running averages, so a
      prediction does not depend on the rest of the batch).
    objects: (N, h, w, C) uint8 objects, ideally already on the device.
    locations: (L, 2) int top-left coordinates, all valid.
    canvas_size: side of the square canvas.
    batch_size: canvases per forward pass; chunks are (batch_size // object_chunk) locations x objects.

  Returns:
    (L, N) int32 numpy array of predicted classes.
  """
  model.eval()
  graphdef, state = nnx.split(model)
  fn = _predict_chunk_fn(graphdef, canvas_size)
  loc_chunk, obj_chunk = chunk_shape(int(locations.shape[0]), int(objects.shape[0]), batch_size)
  row = lambda locs: map_chunks(lambda objs: fn(state, objs, locs), [objects], obj_chunk, axis=1)
  return np.asarray(map_chunks(row, [np.asarray(locations, np.int32)], loc_chunk))


@dataclasses.dataclass(frozen=True)
class GridStats:
  """What a location map keeps of (L, N) correctness: `correct` (L,) counts, `everywhere` (N,) flags and
  `predicted` (K,) flags of the classes predicted anywhere (a constant predictor predicts one)."""

  correct: np.ndarray
  everywhere: np.ndarray
  predicted: np.ndarray

  def accuracy(self) -> np.ndarray:
    return self.correct / max(1, self.everywhere.shape[0])


@functools.cache
def _stats_chunk_fn(graphdef: nnx.GraphDef, canvas_size: int):
  """(state, objects, labels, valid (B,) bool, locations (L,2)) -> ((L,) correct counts, (B,) all correct,
  (K,) classes predicted)."""

  def stats(state, objects, labels, valid, locations):
    model = nnx.merge(graphdef, state)
    logits = models.logits_on_grid(model, objects.astype(jnp.float32) / 255.0, locations, canvas_size)
    pred = jnp.argmax(logits, -1)
    correct = pred == labels[None, :]
    # Padded locations repeat a real one, so only padded objects need masking out of the class set.
    predicted = jnp.any(jax.nn.one_hot(pred, logits.shape[-1], dtype=bool) & valid[None, :, None], axis=(0, 1))
    return jnp.sum(correct & valid[None, :], axis=1, dtype=jnp.int32), jnp.all(correct, axis=0), predicted

  return jax.jit(stats)


def location_stats(
  model: nnx.Module,
  objects: jax.Array,
  labels: jax.Array,
  locations: np.ndarray,
  canvas_size: int,
  batch_size: int = 4096,
) -> GridStats:
  """Per-location correct counts and per-object correct-at-every-location flags, reduced on the device.

  The same chunks and forward passes as `predict_grid`, so `GridStats.accuracy()` equals
  `metrics.location_accuracy(predict_grid(...), labels)`; only (L + N) numbers leave the device.
  Padded locations repeat the last one (no effect on "everywhere"); padded objects are masked out of counts.
  """
  model.eval()
  graphdef, state = nnx.split(model)
  fn = _stats_chunk_fn(graphdef, canvas_size)
  n_obj, n_loc = int(objects.shape[0]), int(locations.shape[0])
  loc_chunk, obj_chunk = chunk_shape(n_loc, n_obj, batch_size)
  objs, labs = pad_to(objects, obj_chunk), pad_to(jnp.asarray(labels, jnp.int32), obj_chunk)
  valid = jnp.arange(objs.shape[0]) < n_obj
  locs = pad_to(np.asarray(locations, np.int32), loc_chunk)
  counts, everywhere = [], [jnp.ones(obj_chunk, bool) for _ in range(0, objs.shape[0], obj_chunk)]
  predicted = False
  for i in range(0, locs.shape[0], loc_chunk):
    total = jnp.zeros(loc_chunk, jnp.int32)
    for c, j in enumerate(range(0, objs.shape[0], obj_chunk)):
      n, ok, seen = fn(
        state, objs[j : j + obj_chunk], labs[j : j + obj_chunk], valid[j : j + obj_chunk], locs[i : i + loc_chunk]
      )
      total, everywhere[c], predicted = total + n, everywhere[c] & ok, predicted | seen
    counts.append(total)
  return GridStats(
    np.asarray(jnp.concatenate(counts))[:n_loc], np.asarray(jnp.concatenate(everywhere))[:n_obj], np.asarray(predicted)
  )


@functools.cache
def _predict_at_fn(graphdef: nnx.GraphDef, canvas_size: int):
  def predict(state, objects, locations):
    logits = models.logits_on_canvas(
      nnx.merge(graphdef, state), objects.astype(jnp.float32) / 255.0, locations, canvas_size
    )
    return jnp.argmax(logits, -1).astype(jnp.int32)

  return jax.jit(predict)


def predict_at(
  model: nnx.Module, objects: jax.Array, locations: jax.Array | np.ndarray, canvas_size: int, batch_size: int = 4096
) -> np.ndarray:
  """Predicted class of object i at location i: (M, h, w, C) uint8 and (M, 2) -> (M,) int32, chunked."""
  model.eval()
  graphdef, state = nnx.split(model)
  fn = _predict_at_fn(graphdef, canvas_size)
  return np.asarray(map_chunks(functools.partial(fn, state), [objects, jnp.asarray(locations, jnp.int32)], batch_size))
