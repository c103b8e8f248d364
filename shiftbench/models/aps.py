"""Adaptive polyphase sampling (APS; Chaman & Dokmanic, "Truly shift-invariant convolutional neural
networks", CVPR 2021).

Stride-2 subsampling keeps one of the four polyphase components of a feature map (rows and columns
offset by 0 or 1) and so depends on where the input sits modulo 2. APS keeps instead the component with
the largest norm. A circular shift of the input permutes the components (and circularly shifts each), so
the same component wins and the output is a circular shift of the unshifted output: with circular
padding, even feature-map sizes at every APS layer and a global-pool head, the network is exactly
invariant to circular shifts.

Ties: `jnp.argmax` returns the first maximum in the fixed order (0,0), (0,1), (1,0), (1,1). A shift
permutes that order, so two *different* components of exactly equal norm may be picked differently
before and after a shift, and exactness is lost on such (measure-zero) ties; identical components
(e.g. a constant map) tie harmlessly because either choice gives the same values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NORMS: tuple[str, ...] = ("l2", "l1", "linf")


def polyphase(x: jax.Array) -> jax.Array:
  """(B, H, W, C) -> (B, 4, H/2, W/2, C): component `2 * i + j` is `x[:, i::2, j::2]`."""
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f"APS needs even feature maps, got {h}x{w}: use a canvas divisible by 2 per APS layer")
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 2, 4, 1, 3, 5)
  return x.reshape(b, 4, h // 2, w // 2, c)


def phase_index(x: jax.Array, norm: str = "l2") -> jax.Array:
  """Per example, the index (0..3) of the polyphase component with the largest norm; first max on ties.

  The index is piecewise constant in `x`, so it carries no gradient (`stop_gradient` makes that explicit).
  """
  if norm not in NORMS:
    raise ValueError(f"unknown APS norm {norm!r}; allowed: {', '.join(NORMS)}")
  comps = jax.lax.stop_gradient(polyphase(x))
  axes = (2, 3, 4)
  if norm == "l2":
    scores = jnp.sum(comps * comps, axis=axes)  # squared: same argmax, no sqrt
  elif norm == "l1":
    scores = jnp.sum(jnp.abs(comps), axis=axes)
  else:
    scores = jnp.max(jnp.abs(comps), axis=axes)
  return jnp.argmax(scores, axis=1).astype(jnp.int32)


def select_phase(x: jax.Array, index: jax.Array) -> jax.Array:
  """Component `index[b]` of example `b`: (B, H, W, C) -> (B, H/2, W/2, C). Gradients reach that component.

  Exposed separately so a residual block can subsample its shortcut with the main branch's index: two
  branches choosing independently could pick different phases and then be added misaligned.
  """
  comps = polyphase(x)
  return jnp.take_along_axis(comps, index[:, None, None, None, None], axis=1)[:, 0]


def aps_downsample(x: jax.Array, norm: str = "l2") -> jax.Array:
  """Stride-2 adaptive polyphase sampling of an NHWC map with even height and width."""
  return select_phase(x, phase_index(x, norm))
