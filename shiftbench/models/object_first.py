"""The first blocks computed near the object rather than over the whole blank canvas: exact, and cheaper.

A canvas is zero outside its object (`canvas.place`), and a network's first layers only see that blank
canvas away from the object. Two exact shortcuts follow; the tests check logits and gradients against
the canvas path for every setting `supported` accepts (tests/test_object_first.py).

First block (conv -> 2x2 max pool or stride 2 -> ReLU). Before its bias, the conv is zero wherever its
window misses the object. Write o = y + pad_before - (k - 1) for the canvas-conv row where the object's
full convolution starts, r = o mod 2 and q = (o - r) / 2. Then, per axis,

    block1(place(obj, y))  ==  relu(place(L, q) + bias),   L = down(conv_valid(local(obj, r)))

where `local` is the object with k - 1 + r zeros in front (so the downsampling windows line up with the
canvas's) and zeros behind up to an even number of conv rows, `down` is the 2x2 max pool or the stride
2, and `place` drops whatever lands off the output grid. The bias and ReLU act after placement because
the blank canvas carries the bias too; max commutes with adding a constant.

Later blocks (stride-1 conv with zero padding, 2x2 max pool). Block 2's input is a constant c =
relu(bias1) everywhere plus D = relu(L + bias1) - c near the object, so by linearity

    conv2(block1 output)  ==  conv2(c everywhere) + place(conv2_full(D masked to the grid), q + pad2 - (k2 - 1))

The first term is one blank image per step; the second runs over (s + k2 - 1)^2 positions instead of the
whole map (10x10 instead of 16x16 for 12-px objects on 32-px canvases). Only the pool windows that touch
the second term differ from the blank image's, so the max pool and ReLU run on those alone (the second
term plus the blank image cropped there), and block 3 again sees "the blank canvas's map + a difference
in a small window": the same step repeats while the window stays small (`SPARSE_MAX_AREA`), and the
rest of the network runs on full maps. Nothing of full-map size is built until then.

In a location map, L depends on the location only through its residue, so it is computed once per object
and residue (4 per object), not once per canvas. On CPU the 1-channel first conv runs as patches +
matmul, which XLA:CPU does faster than its conv for few input channels (checked against each other).
Offsets known on the host and equal for the whole batch (`fixed` training) place with pads, not gathers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from shiftbench.models import layers

# Patches + matmul beat XLA:CPU's conv for a first layer with few input channels, and tie or lose from 8
# input channels up (docs/performance.md).
PATCH_CONV_MAX_CHANNELS = 4
# A later block's conv runs near the object only when its full conv covers at most this fraction of the
# conv's output map; past that, the gathers cost more than the conv work they save.
SPARSE_MAX_AREA = 0.6
_RESIDUES = ((0, 0), (0, 1), (1, 0), (1, 1))


def _conv_unsupported(block) -> str | None:
  """Why a block's conv cannot be split into a blank-canvas part and a part near the object, or None."""
  if block.conv.pad_mode != "constant":
    return "circular padding (the object can wrap around the canvas)"
  if block.conv.conv.bias is None:
    return "a conv without bias"
  return None


def supported(block) -> str | None:
  """None if the first block (a `cnn.Block`) can run on objects, else why not."""
  if block.downsample not in ("max", "stride"):
    return f"downsample={block.downsample!r} (supported: max, stride)"
  return _conv_unsupported(block)


def _uses_patches(in_channels: int) -> bool:
  return jax.default_backend() == "cpu" and in_channels <= PATCH_CONV_MAX_CHANNELS


def conv_valid(x: jax.Array, kernel: jax.Array, stride: int = 1, patches: bool | None = None) -> jax.Array:
  """Unpadded convolution of NHWC `x` with an HWIO `kernel`, as XLA's conv or as patches + matmul
  (`patches=None`: whichever is faster on this backend for this many input channels)."""
  kh, kw, cin, cout = kernel.shape
  if patches is None:
    patches = _uses_patches(cin)
  if not patches:
    return layers.conv_general_dilated(x, kernel, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ho = (x.shape[1] - kh) // stride + 1
  wo = (x.shape[2] - kw) // stride + 1
  cols = [
    x[:, dy : dy + stride * (ho - 1) + 1 : stride, dx : dx + stride * (wo - 1) + 1 : stride]
    for dy in range(kh)
    for dx in range(kw)
  ]
  return jnp.einsum("bhwpc,pco->bhwo", jnp.stack(cols, axis=3), kernel.reshape(kh * kw, cin, cout))


def _kernel_size(block) -> int:
  return block.conv.conv.kernel.shape[0]


def _conv_rows(block, size: int) -> int:
  """Output size of `block`'s conv at stride 1 on a `size` input."""
  before, after = block.conv.pad
  return size + before + after - _kernel_size(block) + 1


def _first_geometry(block, object_hw: tuple[int, int], canvas_size: int) -> tuple[int, int]:
  """(local canvas side, block output side on the canvas) for square objects."""
  h, w = object_hw
  assert h == w, f"square objects only, got {h}x{w} (ShiftNet sends others down the canvas path)"
  k = _kernel_size(block)
  rows = h + k + (h + k) % 2  # conv rows to cover: the full conv plus the residue, made even
  conv_rows = _conv_rows(block, canvas_size)
  return rows + k - 1, conv_rows // 2 if block.downsample == "max" else (conv_rows + 1) // 2


def _offsets(block, locations: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(residue r, output offset q) per location and axis."""
  o = locations + block.conv.pad[0] - (_kernel_size(block) - 1)  # numpy stays numpy (static offsets)
  r = o % 2  # numpy's and jnp's % follow the divisor's sign: r is 0 or 1 also for negative o
  return r, (o - r) // 2


def _local_output(block, objects: jax.Array, residues: jax.Array, local_side: int) -> jax.Array:
  """L: block 1 before its bias and ReLU on the zero-padded objects, (B, s, s, C1)."""
  local = place_per_location(objects[:, None], residues + (_kernel_size(block) - 1), local_side)[:, 0]
  kernel = block.conv.conv.kernel[...]
  if block.downsample == "max":
    return layers.max_pool_2x2(conv_valid(local, kernel))
  return conv_valid(local, kernel, stride=2)


def place_per_location(x: jax.Array, offsets: jax.Array | np.ndarray, size: int) -> jax.Array:
  """(L, N, h, w, C) maps with top-left corners at (L, 2) offsets on (L, N, size, size, C) zero grids; parts
  off the grid are dropped. Same as `canvas.place` per location, but as slices of a padded copy (a gather
  forward, and backward a crop, also a gather), several times cheaper here than selection-matrix einsums
  for many channels.
  Offsets known on the host and equal for every location (`fixed` training) need no gather: one pad.
  """
  if (offset := _same_static_offset(offsets)) is not None:
    h, w = x.shape[2:4]
    oy, ox = (int(v) for v in np.clip(offset, (-h, -w), size))  # beyond these nothing overlaps
    return jax.lax.pad(
      x, jnp.zeros((), x.dtype), ((0, 0, 0), (0, 0, 0), (oy, size - oy - h, 0), (ox, size - ox - w, 0), (0, 0, 0))
    )
  return _place_gather(x, offsets, size)


def crop_image(image: jax.Array, offsets: jax.Array | np.ndarray, size: int) -> jax.Array:
  """(G, G, C) image -> its (L, size, size, C) windows with top-left corners at (L, 2) offsets, zero off the
  image: a gather from the one image (scatter-add backward), never broadcast to every location. One pad
  for equal host offsets."""
  g = image.shape[0]
  if (offset := _same_static_offset(offsets)) is not None:
    oy, ox = (int(v) for v in np.clip(offset, -size, g))
    out = jax.lax.pad(image, jnp.zeros((), image.dtype), ((-oy, oy + size - g, 0), (-ox, ox + size - g, 0), (0, 0, 0)))
    return jnp.broadcast_to(out, (offsets.shape[0], *out.shape))
  return _crop(image[None, None], offsets, (size, size), shared=True)[:, 0]


def _same_static_offset(offsets) -> np.ndarray | None:
  """The one (2,) offset if `offsets` is a host (numpy) array whose rows are all equal, else None."""
  if isinstance(offsets, np.ndarray) and offsets.size and (offsets == offsets[:1]).all():
    return offsets[0]
  return None


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _place_gather(x: jax.Array, offsets: jax.Array, size: int) -> jax.Array:
  return _place(x, offsets, size)


def _slice_at(padded: jax.Array, starts: jax.Array, shape: tuple[int, ...], shared: bool = False) -> jax.Array:
  """One window per row of `starts`, from the matching row of `padded` or, `shared`, from its only row."""
  take = lambda a, s: jax.lax.dynamic_slice(a, (0, s[0], s[1], 0), shape)
  if shared:
    return jax.vmap(take, in_axes=(None, 0))(padded[0], starts)
  return jax.vmap(take)(padded, starts)


def _place(x: jax.Array, offsets: jax.Array, size: int) -> jax.Array:
  h, w = x.shape[2:4]
  offsets = jnp.clip(offsets, jnp.array([-h, -w]), size)  # beyond these nothing overlaps: same zeros
  padded = jnp.pad(x, ((0, 0), (0, 0), (size, size), (size, size), (0, 0)))
  return _slice_at(padded, size - offsets, (x.shape[1], size, size, x.shape[4]))


def _crop(x: jax.Array, offsets: jax.Array, hw: tuple[int, int], shared: bool = False) -> jax.Array:
  h, w = hw
  offsets = jnp.clip(offsets, jnp.array([-h, -w]), jnp.array(x.shape[2:4]))  # beyond these: all zeros
  padded = jnp.pad(x, ((0, 0), (0, 0), (h, h), (w, w), (0, 0)))
  return _slice_at(padded, jnp.array([h, w]) + offsets, (x.shape[1], h, w, x.shape[4]), shared)


# Placing and cropping are transposes, so the placement's VJP is a crop (integer offsets: no cotangent).
_place_gather.defvjp(
  lambda x, offsets, size: (_place(x, offsets, size), (offsets, x.shape[2:4])),
  lambda size, res, g: (_crop(g, res[0], res[1]), None),
)


def _worth_it(block, window: int, grid: int) -> bool:
  """Whether `block` can run on a (window x window) neighbourhood of a (grid x grid) map, and should: a
  stride-1 conv with zero padding and a bias, a 2x2 max pool, and a full conv over at most
  SPARSE_MAX_AREA of the conv's output."""
  if block.downsample != "max" or _conv_unsupported(block) is not None:
    return False
  full = window + _kernel_size(block) - 1
  return full * full <= SPARSE_MAX_AREA * _conv_rows(block, grid) ** 2


def _near_object(blocks: Sequence, local1: jax.Array, q: jax.Array, grid: int) -> tuple[jax.Array, int]:
  """From L (L, N, s, s, C1) at offsets q (L, 2) on block 1's (grid x grid) output map to the output of
  as many blocks as can run near the object: ((L * N, ...) features, index of the next block).

  The map entering block i is `background + place(delta, q)`: a map that is the same for every object
  (a blank canvas through blocks 1..i-1) plus a difference confined to an (s x s) window. By linearity,
  block i's conv is the background's conv (one image, `blank`) plus the full conv of the window (F = s +
  k - 1 rows). Only the 2x2 pool windows that touch the full conv differ from the background's: p = F //
  2 + 1 of them per axis, starting at pool row qn = floor(at / 2), so the pool runs on full + blank over
  those 2p conv rows alone, and block i + 1 starts from a p x p difference at qn.
  """
  bias1 = blocks[0].conv.conv.bias[...]
  background = jnp.broadcast_to(jax.nn.relu(bias1), (1, grid, grid, bias1.shape[0]))
  delta = jax.nn.relu(local1 + bias1) - background[0, 0, 0]
  i = 1
  while i < len(blocks) and _worth_it(blocks[i], delta.shape[2], grid):
    block, s, k = blocks[i], delta.shape[2], _kernel_size(blocks[i])
    xp = np if isinstance(q, np.ndarray) else jnp  # host offsets give a constant mask
    on_grid = (q[:, :, None] + xp.arange(s) >= 0) & (q[:, :, None] + xp.arange(s) < grid)  # (L, 2, s)
    mask = (on_grid[:, 0, :, None] & on_grid[:, 1, None, :]).astype(delta.dtype)[:, None, :, :, None]
    # The full conv as an explicit pad + unpadded conv: XLA:CPU's gradient of a conv padded by k - 1 is
    # slower (docs/performance.md).
    pad = ((0, 0), (k - 1, k - 1), (k - 1, k - 1), (0, 0))
    full = conv_valid(jnp.pad((delta * mask).reshape(-1, *delta.shape[2:]), pad), block.conv.conv.kernel[...])
    full = full.reshape(*delta.shape[:2], *full.shape[1:])
    blank = block.conv(background)  # bias included
    at = q + block.conv.pad[0] - (k - 1)
    i += 1
    # Pool windows off the conv's map (at its borders) hold garbage here; they fall off the pooled map,
    # where the next block's mask or the final placement drops them.
    window = full.shape[2] // 2 + 1
    qn = at // 2
    z = place_per_location(full, at - 2 * qn, 2 * window) + crop_image(blank[0], 2 * qn, 2 * window)[:, None]
    x = block.after_conv(z.reshape(-1, *z.shape[2:])).reshape(*z.shape[:2], window, window, -1)
    background = block.after_conv(blank)
    q, grid = qn, background.shape[1]
    delta = x - crop_image(background[0], q, window)[:, None]  # pool windows off the map: masked or dropped
  x = place_per_location(delta, q, grid) + background[0]
  return x.reshape(-1, *x.shape[2:]), i


def first_blocks(blocks: Sequence, objects: jax.Array, locations: jax.Array, canvas_size: int) -> tuple[jax.Array, int]:
  """The output of the first block(s) for objects (B, h, w, C) at (B, 2) locations on blank canvases, and
  the index of the next block: `(x, i)` with x equal to blocks[:i] applied to the placed canvases."""
  local_side, grid = _first_geometry(blocks[0], objects.shape[1:3], canvas_size)
  r, q = _offsets(blocks[0], locations)
  local1 = _local_output(blocks[0], objects, r, local_side)
  return _near_object(blocks, local1[:, None], q, grid)


def first_blocks_grid(
  blocks: Sequence, objects: jax.Array, locations: jax.Array, canvas_size: int
) -> tuple[jax.Array, int]:
  """`first_blocks` for every object (B, ...) at every location (L, 2): features of shape (L * B, ...)
  in location-major order. L is computed once per object and residue (4 per object), not per canvas."""
  local_side, grid = _first_geometry(blocks[0], objects.shape[1:3], canvas_size)
  r, q = _offsets(blocks[0], locations)
  n = objects.shape[0]
  residues = jnp.repeat(jnp.asarray(_RESIDUES, jnp.int32), n, axis=0)
  local1 = _local_output(blocks[0], jnp.tile(objects, (4, 1, 1, 1)), residues, local_side)
  local1 = local1.reshape(4, n, *local1.shape[1:])
  return _near_object(blocks, jnp.take(local1, 2 * r[:, 0] + r[:, 1], axis=0), q, grid)
