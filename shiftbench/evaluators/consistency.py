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

import jax
import jax.numpy as jnp
import numpy as np

from shiftbench.data import canvas
from shiftbench.evaluators.chunks import map_chunks
from shiftbench.evaluators.predictor import Forward, Predictor

SHIFTS: tuple[str, ...] = ("canvas", "circular")


def sample_shift_pairs(
  key: jax.Array,
  n: int,
  spec: canvas.CanvasSpec,
  d: int,
  shift: str,
  around: tuple[int, int] | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Draws, per object, a base location and an offset in [-d, d]^2.

  For `canvas` shifts the base location is uniform over the locations from which the shifted object
  stays inside the canvas (so offsets are never clipped); for `circular` it is uniform over all valid
  locations. With `around` (a location), every base is that location and the offsets are those that keep
  the shifted object inside the canvas: consistency where a model trained at one place is right.
  Returns (base (n, 2), offset (n, 2)) int32.
  """
  if shift not in SHIFTS:
    raise ValueError(f"unknown shift {shift!r}; allowed: {', '.join(SHIFTS)}")
  d = min(int(d), spec.max_offset) if shift == "canvas" else int(d)
  k_off, k_loc = jax.random.split(key)
  offset = jax.random.randint(k_off, (n, 2), -d, d + 1)
  if around is not None:
    base = jnp.broadcast_to(jnp.asarray(spec.check_location(around), jnp.int32), (n, 2))
    if shift == "canvas":  # an offset that would leave the canvas stops at its edge
      offset = jnp.clip(base + offset, 0, spec.max_offset) - base
    return base, offset
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


def _pair_predictions(model: Forward, objects: jax.Array, base: jax.Array, offset: jax.Array, shift: str) -> jax.Array:
  """objects (B,h,w,C) uint8, base, offset (B,2) -> (2, B) predictions at both placements."""
  if shift == "canvas":  # both are placements on a blank canvas: the models' shortcut applies
    logits = model.on_canvas(jnp.concatenate([objects, objects]), jnp.concatenate([base, base + offset]))
  else:
    logits = model.logits(
      jnp.concatenate(shifted_canvases(model.pixels(objects), base, offset, model.canvas_size, shift))
    )
  return jnp.argmax(logits, -1).reshape(2, -1).astype(jnp.int32)


def predict_pairs(
  predictor: Predictor, objects: jax.Array, base: jax.Array, offset: jax.Array, shift: str, batch_size: int = 4096
) -> np.ndarray:
  """Predictions at both placements of every pair, in fixed-size chunks.

  Args:
    predictor: the model in eval mode.
    objects: (N, h, w, C) uint8 objects.
    base: (N, 2) int32 first placements.
    offset: (N, 2) int32 offsets of the second placement.
    shift: `canvas` or `circular`.
    batch_size: canvases per forward pass (two per pair).

  Returns:
    (2, N) int32 numpy array: the predictions at `base`, then at the shifted placement.
  """
  fn = predictor.jit(_pair_predictions, shift=shift)
  return np.asarray(map_chunks(fn, [objects, base, offset], batch_size // 2, axis=1))


def shift_consistency(
  predictor: Predictor,
  objects: jax.Array,
  key: jax.Array,
  spec: canvas.CanvasSpec,
  d: int,
  shift: str = "canvas",
  batch_size: int = 4096,
  around: tuple[int, int] | None = None,
) -> float:
  """Zhang's consistency of the predictor's model on `objects` (uint8), one random pair per object.

  Args:
    predictor: the model in eval mode, on `spec`'s canvas.
    objects: (N, h, w, C) uint8 objects.
    key: the random key of the pairs.
    spec: the canvas the pairs are drawn on.
    d: largest offset per axis, in pixels.
    shift: `canvas` or `circular`.
    batch_size: canvases per forward pass.
    around: draw every pair from this base location (`sample_shift_pairs`); None: anywhere.

  Returns:
    The fraction of pairs with the same predicted class.
  """
  if spec.canvas_size != predictor.canvas_size:
    raise ValueError(f"pairs drawn on a {spec.canvas_size}-px canvas, predictor on {predictor.canvas_size} px")
  base, offset = sample_shift_pairs(key, int(objects.shape[0]), spec, d, shift, around)
  preds = predict_pairs(predictor, objects, base, offset, shift, batch_size)
  return float(consistency(preds[0], preds[1]))
