"""Predictions over (locations x objects), as one jitted program per chunk shape.

Every metric of DESIGN.md section 4 that reads predictions at many locations starts from
`predict_grid`: an (L, N) array of predicted classes for N objects at L locations. Objects and
locations are processed in fixed-size chunks (padded at the end) so the jitted function compiles once
per model and stays within memory for 1369-location maps of 10k objects.
"""

from __future__ import annotations

import functools

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

