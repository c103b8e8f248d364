"""Shift consistency (Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019).

The probability that an object gets the same predicted class at two placements that differ by an offset
of at most `d` pixels per axis (diagonal offsets included, zero included), for two kinds of shift:

- `canvas`: the object moves on the canvas and stays fully inside it (the protocol's own shift);
- `circular`: the whole canvas is rolled (`jnp.roll`), so content leaving one border re-enters at the
  other; APS with circular padding must score exactly 1 here.

Difference from the reference implementation: Zhang's evaluation draws *one* pair of offsets per batch;
shiftbench draws an offset (and a base location) *per object*, which has the same expectation and a
lower variance, and makes the number independent of the batch size.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shiftbench import canvas, evaluation, models

SHIFTS: tuple[str, ...] = ("canvas", "circular")


def sample_shift_pairs(
  key: jax.Array, n: int, spec: canvas.CanvasSpec, d: int, shift: str
) -> tuple[jax.Array, jax.Array]:
  """Draws, per object, a base location and an offset in [-d, d]^2.

  For `canvas` shifts the base location is uniform over the locations from which the shifted object
  stays inside the canvas (so offsets are never clipped); for `circular` it is uniform over all valid
  locations. Returns (base (n, 2), offset (n, 2)) int32.
  """
  if shift not in SHIFTS:
    raise ValueError(f"unknown shift {shift!r}; allowed: {', '.join(SHIFTS)}")
  d = min(int(d), spec.max_offset) if shift == "canvas" else int(d)
  k_off, k_loc = jax.random.split(key)
  offset = jax.random.randint(k_off, (n, 2), -d, d + 1)
  if shift == "circular":
    return jax.random.randint(k_loc, (n, 2), 0, spec.max_offset + 1), offset
  lo = jnp.maximum(0, -offset)  # the base must keep base + offset inside 0..max_offset
  hi = spec.max_offset - jnp.maximum(0, offset)
  u = jax.random.uniform(k_loc, (n, 2))
  base = lo + jnp.floor(u * (hi - lo + 1)).astype(jnp.int32)
  return jnp.minimum(base, hi), offset


def shifted_canvases(
  objects: jax.Array, base: jax.Array, offset: jax.Array, canvas_size: int, shift: str
) -> tuple[jax.Array, jax.Array]:
  """The two canvases of each pair: (B, H, W, C) at `base`, and the same shifted by `offset`."""
  first = canvas.place(objects, base, canvas_size)
  if shift == "canvas":
    return first, canvas.place(objects, base + offset, canvas_size)
  roll = jax.vmap(lambda img, off: jnp.roll(img, (off[0], off[1]), axis=(0, 1)))
  return first, roll(first, offset)


def consistency(pred_a: jax.Array, pred_b: jax.Array) -> jax.Array:
  """Fraction of pairs with the same predicted class."""
  return jnp.mean(jnp.asarray(pred_a) == jnp.asarray(pred_b))


@functools.cache
def _pair_fn(graphdef: nnx.GraphDef, canvas_size: int, shift: str):
  """(state, objects (B,h,w,C) uint8, base, offset) -> (2, B) predictions. Cached per model and shift."""

  def predict(state, objects, base, offset):
    model = nnx.merge(graphdef, state)
    objects = objects.astype(jnp.float32) / 255.0
    if shift == "canvas":  # both are placements on a blank canvas: the models' shortcut applies
      logits = models.logits_on_canvas(
        model, jnp.concatenate([objects, objects]), jnp.concatenate([base, base + offset]), canvas_size
      )
    else:
      logits = model(jnp.concatenate(shifted_canvases(objects, base, offset, canvas_size, shift)))
    return jnp.argmax(logits, -1).reshape(2, -1).astype(jnp.int32)

  return jax.jit(predict)


def predict_pairs(
  model: nnx.Module,
  objects: jax.Array,
  base: jax.Array,
  offset: jax.Array,
  canvas_size: int,
  shift: str,
  batch_size: int = 4096,
) -> np.ndarray:
  """Predictions at both placements of every pair, in fixed-size chunks: (2, N) int32."""
  graphdef, state = nnx.split(model)
  fn = functools.partial(_pair_fn(graphdef, canvas_size, shift), state)
  return np.asarray(evaluation.map_chunks(fn, [objects, base, offset], batch_size // 2, axis=1))


def shift_consistency(
  model: nnx.Module,
  objects: jax.Array,
  key: jax.Array,
  spec: canvas.CanvasSpec,
  d: int,
  shift: str = "canvas",
  batch_size: int = 4096,
) -> float:
  """Zhang's consistency of `model` on `objects` (uint8), one random pair per object."""
  base, offset = sample_shift_pairs(key, int(objects.shape[0]), spec, d, shift)
  preds = predict_pairs(model, objects, base, offset, spec.canvas_size, shift, batch_size)
  return float(consistency(preds[0], preds[1]))
