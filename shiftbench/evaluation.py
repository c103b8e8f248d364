"""Predictions over (locations x objects), as one jitted program per chunk shape.

Every metric of DESIGN.md section 4 that reads predictions at many locations starts from
`predict_grid`: an (L, N) array of predicted classes for N objects at L locations. Objects and
locations are processed in fixed-size chunks (padded at the end) so the jitted function compiles once
per model and stays within memory for 1369-location maps of 10k objects.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shiftbench import models


OBJECTS_PER_CHUNK = 16
CPU_BATCH = 512  # canvases per pass on CPU: ran 2-4x faster than 4096 (cache-sized chunks)
# On an H200, location maps ran 10.6x faster at 8192 than at 512 at the 64-px forgetting geometry and
# 3.6x at the quick one (README, Performance). 8192 is the largest size measured, so the ceiling.
ACCELERATOR_BATCH = (1024, 8192)
MEMORY_FRACTION = 0.25  # of the device's free memory that one chunk's activations may take


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


def activation_bytes(canvas_size: int, widths: Sequence[int]) -> int:
  """A generous bound on one canvas's live activations in a forward pass: every block's conv output
  at full resolution (before its 2x2 downsampling), three fp32 copies (conv, pool, temporaries)."""
  side, total = canvas_size, 0
  for w in widths:
    total += side * side * int(w)
    side = max(1, side // 2)
  return 3 * 4 * total


def auto_batch_size(canvas_size: int, model_widths: Sequence[Sequence[int]],
                    device: jax.Device | None = None) -> int:
  """Canvases per forward pass for this backend and problem size (`eval.batch_size: auto`).

  Args:
    canvas_size: side of the square canvas.
    model_widths: each model's conv widths; the batch is sized for the largest.
    device: the device to size for; None is JAX's default device.

  Returns:
    CPU_BATCH on CPU. On accelerators, the largest power of two within ACCELERATOR_BATCH whose
    activations (`activation_bytes`) fit in MEMORY_FRACTION of the device's free memory (from
    `memory_stats`; the ceiling when the backend does not report it).
  """
  device = device or jax.devices()[0]
  if device.platform == "cpu":
    return CPU_BATCH
  lo, hi = ACCELERATOR_BATCH
  try:
    stats = device.memory_stats() or {}
  except Exception:  # noqa: BLE001  (not every backend implements it)
    stats = {}
  if "bytes_limit" not in stats:
    return hi
  free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
  per_canvas = max(activation_bytes(canvas_size, w) for w in model_widths)
  fit = int(MEMORY_FRACTION * free) // max(1, per_canvas)
  batch = lo
  while batch * 2 <= min(fit, hi):
    batch *= 2
  return batch


def resolve_batch_size(value: int | str, canvas_size: int, model_widths: Sequence[Sequence[int]]) -> int:
  """`eval.batch_size` as a number: `auto` (see `auto_batch_size`) or a positive int."""
  if isinstance(value, str) and value.strip().lower() == "auto":
    return auto_batch_size(canvas_size, model_widths)
  try:
    batch = int(value)
  except (TypeError, ValueError):
    raise ValueError(f"eval.batch_size must be a positive int or 'auto', got {value!r}") from None
  if batch < 1:
    raise ValueError(f"eval.batch_size must be a positive int or 'auto', got {value!r}")
  return batch


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


def predict_grid(model: nnx.Module, objects: jax.Array, locations: np.ndarray, canvas_size: int,
                 batch_size: int = 4096) -> np.ndarray:
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
  n_obj, n_loc = int(objects.shape[0]), int(locations.shape[0])
  loc_chunk, obj_chunk = chunk_shape(n_loc, n_obj, batch_size)
  objs = pad_to(objects, obj_chunk)
  locs = pad_to(np.asarray(locations, np.int32), loc_chunk)
  rows = []
  for i in range(0, locs.shape[0], loc_chunk):
    cols = [fn(state, objs[j:j + obj_chunk], locs[i:i + loc_chunk]) for j in range(0, objs.shape[0], obj_chunk)]
    rows.append(jnp.concatenate(cols, axis=1))
  return np.asarray(jnp.concatenate(rows, axis=0))[:n_loc, :n_obj]

