"""Fixed-size chunks: how the evaluation paths cut their canvases so one compiled program serves them all.

Every array is padded to a multiple of its chunk (the last entry repeated) and the padded results are cut
off, so the jitted programs compile once per model and chunk shape, whatever the number of objects or
locations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

OBJECTS_PER_CHUNK = 16


def _balanced(n: int, chunk: int) -> int:
  """The smallest chunk that covers n in as many chunks as `chunk` does (least padding)."""
  return -(-n // -(-n // chunk))


def chunk_shape(n_loc: int, n_obj: int, batch_size: int) -> tuple[int, int]:
  """(locations, objects) per chunk of a location map.

  About `batch_size` canvases, as many locations as leave at least OBJECTS_PER_CHUNK objects (models that
  run their first block once per object and residue, `ShiftNet.on_grid`, share it across the chunk's
  locations), balanced so the padding is small.

  Args:
    n_loc: locations of the map.
    n_obj: objects of the map.
    batch_size: canvases per forward pass.

  Returns:
    (locations per chunk, objects per chunk).
  """
  loc_chunk = _balanced(n_loc, max(1, min(n_loc, batch_size // min(n_obj, OBJECTS_PER_CHUNK))))
  obj_chunk = _balanced(n_obj, max(1, min(n_obj, batch_size // loc_chunk)))
  return loc_chunk, obj_chunk


def pad_to(a: jax.Array | np.ndarray, multiple: int) -> jax.Array:
  """Pads axis 0 to a multiple of `multiple` by repeating the last entry (results are sliced off)."""
  n = a.shape[0]
  extra = (-n) % multiple
  if extra == 0:
    return jnp.asarray(a)
  return jnp.concatenate([jnp.asarray(a), jnp.repeat(jnp.asarray(a)[-1:], extra, axis=0)])


def map_chunks(fn: Callable[..., Any], arrays: Sequence[jax.Array | np.ndarray], chunk: int, axis: int = 0) -> Any:
  """`fn` over fixed-size chunks of axis 0 of `arrays`, its outputs joined along `axis` (any pytree of arrays).

  The one chunked driver of the evaluation paths (location maps, point predictions, shift pairs,
  similarity): every array is padded to a multiple of the chunk (`pad_to`) so one compiled program serves
  every chunk, and the padded results are cut off. The outputs stay on the device until the caller reads
  them, so chunks are dispatched without waiting for each other.

  Args:
    fn: a jitted function of one chunk of each array.
    arrays: arrays of equal length n along axis 0.
    chunk: rows per call (clipped to 1..n).
    axis: the axis of each output that the chunks make up.

  Returns:
    `fn`'s output pytree, every leaf joined over the chunks and cut to n along `axis`.
  """
  n = int(arrays[0].shape[0])
  chunk = max(1, min(n, chunk))
  padded = [pad_to(a, chunk) for a in arrays]
  parts = [fn(*(a[i : i + chunk] for a in padded)) for i in range(0, padded[0].shape[0], chunk)]
  cut = (slice(None),) * axis + (slice(0, n),)
  return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=axis)[cut], *parts)
