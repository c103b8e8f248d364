"""VGG's first stages computed near the object instead of over the whole blank canvas: exact, and cheaper.

The same idea as `object_first.py` (read its docstring first), for torchvision's VGG stages (3x3 convs with
padding 1 and a bias, ReLU between them, a 2x2 max pool, ReLU) behind an input adapter. The adapter is
affine per channel, so the adapted canvas is a blank image (the adapter of black, not zero for `imagenet`)
plus a difference that is zero outside the object. Every map inside the first stages is then
`background + place(delta, q)`: a map the same for every canvas of the batch (the blank canvas through
the layers so far, computed once on one image) plus a difference confined to a small window at per-canvas
offset q. Per layer:

  conv:  background -> conv(background); delta -> full conv of delta, masked to the map first (the canvas
         conv's zero padding), a window 2 wider, q - 1 (conv is linear: its bias stays with the background);
  ReLU:  delta -> relu(background + delta) - relu(background) over the window (zero elsewhere);
  pool:  as in `object_first._near_object`: the pool windows that touch the difference, aligned to even rows.

Stages run this way while their last conv's window covers at most `object_first.SPARSE_MAX_AREA` of its
map (4 of VGG16's 5 stages at 224 px with 50-px objects, 2 at 32 px with 8-px ones); the difference is then
placed on the background and the rest of the network runs on full maps. BatchNorm (`vgg16_bn`) is left on
the canvas path: in train mode its batch statistics are those of whole maps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from shiftbench.models import layers
from shiftbench.models.object_first import SPARSE_MAX_AREA, conv_valid, crop_image, place_per_location


def supported(features) -> str | None:
  """None if a `VGGFeatures`' first stages can run near the object, else why not."""
  if any(len(conv_bn) > 1 for stage in features.stages for conv_bn in stage):
    return "BatchNorm (its train-mode statistics are those of whole maps)"
  return None


def near_stages(features, object_size: int, canvas_size: int) -> int:
  """How many of the first stages run near the object (`SPARSE_MAX_AREA` of each stage's last conv map)."""
  side, grid, n = object_size, canvas_size, 0
  for stage in features.stages:
    side += 2 * len(stage)  # each 3x3 full conv widens the window by 2
    if side * side > SPARSE_MAX_AREA * grid * grid:
      break
    side, grid, n = side // 2 + 1, grid // 2, n + 1
  return n


def _on_map(q, size: int, grid: int) -> jax.Array:
  """(B, 1, size, size, 1) 0/1 mask of the window positions that lie on the (grid x grid) map."""
  xp = np if isinstance(q, np.ndarray) else jnp  # host offsets give a constant mask
  on = (q[:, :, None] + xp.arange(size) >= 0) & (q[:, :, None] + xp.arange(size) < grid)  # (B, 2, size)
  return (on[:, 0, :, None] & on[:, 1, None, :]).astype(np.float32)[:, None, :, :, None]


def first_stages(features, objects: jax.Array, locations, canvas_size: int, n: int) -> jax.Array:
  """The output of `features`' first `n` stages for objects (B, s, s, C) at (B, 2) locations on blank
  canvases: equal to running them on `canvas.place(objects, locations, canvas_size)` after the adapter."""
  zero = jnp.zeros((1, 1, 1, objects.shape[-1]), objects.dtype)
  background = features.adapter(jnp.zeros((1, canvas_size, canvas_size, objects.shape[-1]), objects.dtype))
  delta = (features.adapter(objects) - features.adapter(zero))[:, None]  # (B, 1, s, s, C): one window per canvas
  q, grid = locations, canvas_size
  for i in range(n):
    convs = list(features.stages[i])
    for j, (conv,) in enumerate(convs):
      k = conv.kernel.shape[0]
      size = delta.shape[2]
      masked = (delta * _on_map(q, size, grid))[:, 0]
      full = conv_valid(jnp.pad(masked, ((0, 0), (k - 1, k - 1), (k - 1, k - 1), (0, 0))), conv.kernel[...])
      q, background = q - 1, conv(background)  # padding 1: the full conv starts one row above the window
      if j < len(convs) - 1:
        under = crop_image(background[0], q, full.shape[1])
        delta = (jax.nn.relu(under + full) - jax.nn.relu(under))[:, None]
        background = jax.nn.relu(background)
      else:
        delta = full[:, None]
    window, qn = delta.shape[2] // 2 + 1, q // 2
    z = place_per_location(delta, q - 2 * qn, 2 * window)[:, 0] + crop_image(background[0], 2 * qn, 2 * window)
    pooled = jax.nn.relu(layers.max_pool_2x2(z))
    background = jax.nn.relu(layers.max_pool_2x2(background))
    q, grid = qn, background.shape[1]
    delta = (pooled - crop_image(background[0], q, window))[:, None]
  return place_per_location(delta, q, grid)[:, 0] + background
