"""The first block computed on the object rather than on the whole canvas: exact, and several times cheaper.

A canvas is zero outside its object (`canvas.place`). So before its bias, the first convolution is zero
wherever its window misses the object, and a 2x2 max pool (or a stride-2 conv) of that map only differs
from zero near the object. Write o = y + pad_before - (k - 1) for the canvas-conv row where the object's
full convolution starts, r = o mod 2 and q = (o - r) / 2. Then, per axis,

    block(place(obj, y))  ==  relu(place(down(conv_valid(local)), q) + bias)

where `local` is the object with k - 1 + r zeros in front (so the downsampling windows line up with the
canvas's) and zeros behind up to an even number of conv rows, `down` is the block's 2x2 max pool or the
conv's stride 2, and the selection matrices of `place` drop whatever lands off the output grid. The bias
and the ReLU act after placement because the blank canvas carries the bias too; max commutes with adding
a constant, so pooling before the bias is the same.

For a 12-px object on a 32-px canvas and a 3x3 kernel, the conv runs over 16x16 positions instead of
32x32, and everything after it up to the placement on an 8x8 map instead of 16x16. In a location map the
saving is larger still: the first block runs once per object and residue (4 per object), not once per
canvas. It applies to first blocks with zero padding (`same`, `valid`, `full`) and `max` or `stride`
downsampling (the `cnn_fc`, `gap` and `fcn` presets); `supported` says why any other falls back.

On CPU, a conv with few input channels (the first one: 1 for grey objects) runs faster as patches +
matmul than through XLA's convolution, so `conv_valid` picks that form there; both are checked against
each other and against the canvas path, gradients included (tests/test_object_first.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from shiftbench import canvas
from shiftbench.models import layers

# Patches + matmul beat XLA:CPU's conv for the 1-channel first layer (measured: 0.71 vs 1.77 ms forward,
# 1.39 vs 2.07 ms kernel gradient on 64 canvases), and tie or lose from 8 input channels up.
PATCH_CONV_MAX_CHANNELS = 4


def supported(block) -> str | None:
  """None if `block` (a `cnn.Block`) can run on objects, else why not."""
  if block.downsample not in ("max", "stride"):
    return f"downsample={block.downsample!r} (supported: max, stride)"
  if block.conv.pad_mode != "constant":
    return "circular padding (the object can wrap around the canvas)"
  if block.conv.conv.bias is None:
    return "a conv without bias"
  return None


def _uses_patches(in_channels: int) -> bool:
  return jax.default_backend() == "cpu" and in_channels <= PATCH_CONV_MAX_CHANNELS


def conv_valid(x: jax.Array, kernel: jax.Array, stride: int = 1, patches: bool | None = None) -> jax.Array:
  """Unpadded convolution of NHWC `x` with an HWIO `kernel`, as XLA's conv or as patches + matmul
  (`patches=None`: whichever is faster on this backend for this many input channels)."""
  kh, kw, cin, cout = kernel.shape
  if patches is None:
    patches = _uses_patches(cin)
  if not patches:
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ho = (x.shape[1] - kh) // stride + 1
  wo = (x.shape[2] - kw) // stride + 1
  cols = [x[:, dy:dy + stride * (ho - 1) + 1:stride, dx:dx + stride * (wo - 1) + 1:stride]
          for dy in range(kh) for dx in range(kw)]
  return jnp.einsum("bhwpc,pco->bhwo", jnp.stack(cols, axis=3), kernel.reshape(kh * kw, cin, cout))


def _geometry(block, object_hw: tuple[int, int], canvas_size: int):
  """Sizes of the local canvas (per axis), of the block's local output, and of its output on the canvas."""
  k = block.conv.conv.kernel.shape[0]
  before, after = block.conv.pad
  rows = [n + k + (n + k) % 2 for n in object_hw]  # conv rows to cover: the full conv + residue, even
  local = tuple(r + k - 1 for r in rows)
  conv_rows = canvas_size + before + after - k + 1  # the canvas conv's output size (stride 1)
  out = conv_rows // 2 if block.downsample == "max" else (conv_rows + 1) // 2
  return k, before, local, out


def _local_output(block, local_canvases: jax.Array) -> jax.Array:
  """The block before its bias and ReLU, on zero-padded objects: conv (valid) then 2x2 downsampling."""
  kernel = block.conv.conv.kernel[...]
  if block.downsample == "max":
    return layers.max_pool_2x2(conv_valid(local_canvases, kernel))
  return conv_valid(local_canvases, kernel, stride=2)


def _finish(block, placed: jax.Array) -> jax.Array:
  return jax.nn.relu(placed + block.conv.conv.bias[...])


def _offsets(locations: jax.Array, k: int, before: int) -> tuple[jax.Array, jax.Array]:
  """(residue r, output offset q) per location and axis."""
  o = locations + before - (k - 1)
  r = o % 2  # jnp's % follows the divisor's sign: r is 0 or 1 also for negative o
  return r, (o - r) // 2


def first_block(block, objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
  """`block(canvas.place(objects, locations, canvas_size))` for objects (B, h, w, C) at (B, 2) locations."""
  k, before, local, out = _geometry(block, objects.shape[1:3], canvas_size)
  r, q = _offsets(locations, k, before)
  assert local[0] == local[1], "square objects"  # CanvasSpec objects are square
  local_canvases = canvas.place(objects, r + (k - 1), local[0])
  return _finish(block, canvas.place(_local_output(block, local_canvases), q, out))


def first_block_grid(block, objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
  """The first block for every object at every location: (B, h, w, C), (L, 2) -> (L, B, Ho, Wo, C).

  The local output depends on the location only through its residue per axis, so it is computed once
  per object for each of the 4 residues and placed L times.
  """
  k, before, local, out = _geometry(block, objects.shape[1:3], canvas_size)
  assert local[0] == local[1], "square objects"
  r, q = _offsets(locations, k, before)
  residues = jnp.array([[0, 0], [0, 1], [1, 0], [1, 1]], jnp.int32)
  local_canvases = canvas.place_grid(objects, residues + (k - 1), local[0])  # (4, B, ...)
  n_res, n_obj = local_canvases.shape[:2]
  local_out = _local_output(block, local_canvases.reshape(n_res * n_obj, *local_canvases.shape[2:]))
  local_out = local_out.reshape(n_res, n_obj, *local_out.shape[1:])
  per_location = jnp.take(local_out, 2 * r[:, 0] + r[:, 1], axis=0)  # (L, B, ...)
  sel = jax.vmap(canvas.selection_matrix, in_axes=(0, None, None))
  ey = sel(q[:, 0], per_location.shape[2], out)
  ex = sel(q[:, 1], per_location.shape[3], out)
  return _finish(block, jnp.einsum("lYy,lbyxc,lXx->lbYXc", ey, per_location, ex))
