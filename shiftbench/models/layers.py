"""Building blocks with swappable padding and downsampling, each from its published definition.

- Padding (Kayhan & van Gemert, CVPR 2020): `same` (zeros, output size kept), `valid` (none), `circular`
  (wrap-around, so a stride-1 conv commutes with `jnp.roll`), `full` (k - 1 zeros per side, so border
  pixels are seen as often as central ones).
- Anti-aliased downsampling (Zhang, ICML 2019): a normalised binomial filter applied depthwise with
  stride 2, padded floor((k-1)/2) before and ceil((k-1)/2) after. Size 1 is plain subsampling and size 2
  is 2x2 average pooling.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

PADDINGS: tuple[str, ...] = ("same", "valid", "circular", "full")
BLUR_PADDINGS: tuple[str, ...] = ("reflect", "zero", "circular")
_JNP_PAD_MODE = {"reflect": "reflect", "zero": "constant", "circular": "wrap"}


def _check(value: str, allowed: tuple[str, ...], what: str) -> str:
  if value not in allowed:
    raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
  return value


def default_blur_padding(padding: str) -> str:
  """Blur padding that matches a conv padding: circular stays circular (shift equivariance), else reflect."""
  return "circular" if padding == "circular" else "reflect"


def conv_padding(kernel_size: int, padding: str) -> tuple[tuple[int, int], str]:
  """Per-side pad width and jnp.pad mode for a conv padding mode."""
  _check(padding, PADDINGS, "padding")
  k = kernel_size
  if padding == "valid":
    return (0, 0), "constant"
  if padding == "full":
    return (k - 1, k - 1), "constant"
  before, after = (k - 1) // 2, k // 2  # `same` geometry, also for circular
  return (before, after), ("wrap" if padding == "circular" else "constant")


def _is_plain_2d(
  lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, precision, kwargs
) -> bool:
  """Whether a `lax.conv_general_dilated` call is the plain NHWC/HWIO 2-D conv `conv2d` handles."""
  nhwc = dimension_numbers is not None and jax.lax.conv_dimension_numbers(
    lhs.shape, rhs.shape, dimension_numbers
  ) == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
  no_dilation = all(d in (None, 1) or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
  return (
    lhs.ndim == 4
    and nhwc
    and no_dilation
    and feature_group_count == 1
    and precision is None
    and not any(v is not None for v in kwargs.values())
    and jax.default_backend() == "cpu"
  )


def conv_general_dilated(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  precision=None,
  **kwargs,
):
  """`lax.conv_general_dilated` (a drop-in for `nnx.Conv`), with the gradient of plain NHWC/HWIO 2-D
  convs on CPU written as canonical convs (`conv2d`); everything else goes to `lax` unchanged."""
  if not _is_plain_2d(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, precision, kwargs):
    return jax.lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation,
      rhs_dilation,
      dimension_numbers,
      feature_group_count,
      precision=precision,
      **kwargs,
    )
  strides = tuple(int(s) for s in window_strides)
  if isinstance(padding, str):  # "SAME" / "VALID" as nnx.Conv passes them, to explicit pads
    padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
  return conv2d(lhs, rhs, strides, tuple(tuple(int(v) for v in p) for p in padding))


def _conv_nhwc(x, kernel, strides=(1, 1), padding=((0, 0), (0, 0)), lhs_dilation=None, rhs_dilation=None):
  return jax.lax.conv_general_dilated(
    x, kernel, strides, padding, lhs_dilation, rhs_dilation, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(
  x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], tuple[int, int]]
) -> jax.Array:
  """NHWC x HWIO conv with explicit zero padding, whose VJP is two convs in XLA:CPU's canonical form.

  XLA rewrites a conv's gradients (the input gradient: a conv with the flipped kernel; the kernel
  gradient: a conv with batch and features swapped) into the NHWC/HWIO form its Eigen kernels take, but
  not inside a `lax.scan`: there they ran as generic loops, and a scanned training step was ~20x slower
  than one step per dispatch (README, Performance). Written out here, both are Eigen convs wherever they
  appear, so training can run several steps per dispatch on CPU too. Checked against `jax.grad` of
  `lax.conv_general_dilated` for every padding and stride the presets use (tests/test_models.py).
  """
  return _conv_nhwc(x, kernel, strides, padding)


def _conv2d_fwd(x, kernel, strides, padding):
  return _conv_nhwc(x, kernel, strides, padding), (x, kernel)


def _conv2d_bwd(strides, padding, res, g):
  x, kernel = res
  kh, kw = kernel.shape[:2]
  # Input gradient: g dilated by the stride, convolved with the flipped kernel (in/out swapped). The
  # padding puts g's first row where the forward conv's first window started (k - 1 - lo rows before)
  # and makes the output x's size (the rest after; rows the forward conv never read get zeros).
  flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
  back_pad = tuple(
    (k - 1 - lo, size - 1 - (n - 1) * s + lo)
    for k, (lo, _), size, n, s in zip((kh, kw), padding, x.shape[1:3], g.shape[1:3], strides)
  )
  dx = _conv_nhwc(g, flipped, padding=back_pad, lhs_dilation=strides)
  # Kernel gradient: features of x as the batch, the batch as the features, g as a kernel dilated by the
  # stride; the window positions past the kernel (when the stride does not divide the padded size) drop.
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  dk = _conv_nhwc(jnp.transpose(xp, (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)), rhs_dilation=strides)
  return dx, jnp.transpose(dk[:, :kh, :kw], (1, 2, 0, 3))


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def lecun_normal_flat(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """Flax's default kernel init (`lecun_normal`: truncated normal, variance 1 / fan_in), drawn flat.

  The same bits as `nnx.initializers.lecun_normal()` for any shape: the draw is elementwise over a
  row-major counter, so a flat draw reshaped equals the N-D draw. Eagerly, an N-D conv kernel draw
  compiled ~6x slower than a 1-D one (1.9 s vs 0.3 s per shape on the 2-core CPU here). Outside a trace
  the draw's length is rounded up (`_draw_size`) and the scale (one IEEE float32 multiply, exact on either
  side) and the reshape run in numpy, which saves an eager `multiply` and `reshape` program per shape.
  """
  shape = tuple(shape)
  fan_in = math.prod(shape[:-1])  # receptive field x input features, as `variance_scaling` counts it
  size = math.prod(shape)
  if isinstance(key, jax.core.Tracer):
    flat = jax.random.truncated_normal(key, -2, 2, (size,), dtype)
    variance = jnp.array(1.0 / fan_in, dtype=dtype)
    return (flat * (jnp.sqrt(variance) / jnp.array(0.87962566103423978, dtype))).reshape(shape)
  flat = np.asarray(jax.random.truncated_normal(key, -2, 2, (_draw_size(size),), dtype))[:size]
  np_dtype = np.dtype(dtype)
  stddev = np.sqrt(np_dtype.type(1.0 / fan_in)) / np_dtype.type(0.87962566103423978)
  return jnp.asarray((flat * stddev).reshape(shape))


def _draw_size(size: int) -> int:
  """How many values an eager flat draw of `size` draws: a power of two (at least 8192), so that kernels
  of different sizes share one compiled draw. With partitionable threefry (jax's default) element i of a
  flat draw depends only on i, so the first `size` values of a longer draw are the draw of `size`; with
  the older threefry they are not, and the draw is exact."""
  if not jax.config.jax_threefry_partitionable:
    return size
  return max(8192, 1 << (size - 1).bit_length())


class PaddedConv(nnx.Module):
  """A 2-D convolution with any padding mode of `PADDINGS`.

  `same` and `valid` zero padding are the conv's own padding argument, which saves a padded copy of the
  activations forward and a slice of their gradient backward (+10% training throughput on CPU here).
  `circular` (wrap) and `full` (k - 1 zeros) are an explicit `jnp.pad` before an unpadded conv: XLA:CPU's
  gradient of a conv padded by k - 1 ran at half the speed of pad + unpadded conv.
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    padding: str = "same",
    stride: int = 1,
    use_bias: bool = True,
    rngs: nnx.Rngs,
  ):
    self.pad, self.pad_mode = conv_padding(kernel_size, padding)
    self.explicit_pad = padding in ("circular", "full")
    conv_pad = "VALID" if self.explicit_pad else (self.pad, self.pad)
    self.conv = nnx.Conv(
      in_features,
      out_features,
      (kernel_size, kernel_size),
      strides=stride,
      padding=conv_pad,
      use_bias=use_bias,
      kernel_init=lecun_normal_flat,
      conv_general_dilated=conv_general_dilated,
      rngs=rngs,
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.explicit_pad:
      x = jnp.pad(x, ((0, 0), self.pad, self.pad, (0, 0)), mode=self.pad_mode)
    return self.conv(x)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pool with stride 2 (odd trailing row/column dropped), as reshape + max.

  XLA:CPU's `reduce_window` gradient built large index arrays every step; this version's gradient is
  an elementwise mask, several times cheaper (docs/performance.md). Each window sends its gradient to
  one position, its first maximum in row-major order, as `reduce_window`'s gradient and PyTorch's
  `max_pool2d` do. Ties are common here, not rare: a window of blank canvas holds four equal values (the
  conv bias), and sending the gradient to all four would count it four times.
  """
  return _max_pool_fwd(x)[0]


def _max_pool_fwd(x):
  b, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  blocks = x.reshape(b, h // 2, 2, w // 2, 2, c)
  out = blocks.max(axis=(2, 4))
  return out, (blocks, out, (h, w))


def _max_pool_bwd(res, g):
  blocks, out, (h, w) = res
  is_max = blocks == out[:, :, None, :, None, :]
  # Keep only the first maximum of each window, scanning (0,0), (0,1), (1,0), (1,1).
  m00, m01 = is_max[:, :, 0, :, 0], is_max[:, :, 0, :, 1]
  m10, m11 = is_max[:, :, 1, :, 0], is_max[:, :, 1, :, 1]
  m01 = m01 & ~m00
  m10 = m10 & ~(m00 | m01)
  m11 = m11 & ~(m00 | m01 | m10)
  first = jnp.stack([jnp.stack([m00, m01], axis=3), jnp.stack([m10, m11], axis=3)], axis=2)
  dx = (first * g[:, :, None, :, None, :]).reshape(g.shape[0], h - h % 2, w - w % 2, g.shape[-1])
  dx = jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
  return (dx,)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


def dense_max(x: jax.Array, size: int, mode: str = "edge") -> jax.Array:
  """k x k max with stride 1 and `same` geometry ((k-1)//2 before, k//2 after), so the size is kept.

  `mode="wrap"` pads circularly (commutes with `jnp.roll`, needed before APS); `"edge"` replicates the
  border, which gives the same maxima as padding with -inf (the max over the in-bounds part).
  """
  before, after = (size - 1) // 2, size // 2
  xp = jnp.pad(x, ((0, 0), (before, after), (before, after), (0, 0)), mode=mode)
  h, w = x.shape[1:3]
  out = xp[:, :h, :w]
  for dy in range(size):
    for dx in range(size):
      if dy or dx:
        out = jnp.maximum(out, xp[:, dy : dy + h, dx : dx + w])
  return out


def avg_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 average pool with stride 2 (odd trailing row/column dropped), as reshape + mean."""
  b, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def max_pool_2x2_stride1(x: jax.Array) -> jax.Array:
  """Dense 2x2 max (stride 1, no padding): the first half of Zhang's MaxBlurPool; output is n - 1."""
  return jnp.maximum(jnp.maximum(x[:, :-1, :-1], x[:, 1:, :-1]), jnp.maximum(x[:, :-1, 1:], x[:, 1:, 1:]))


def binomial_filter(size: int) -> np.ndarray:
  """Normalised 2-D binomial filter: the outer product of row `size - 1` of Pascal's triangle."""
  if not 1 <= size <= 7:
    raise ValueError(f"blur filter size must be 1..7, got {size}")
  row = np.array([math.comb(size - 1, i) for i in range(size)], np.float64)
  f = np.outer(row, row)
  return (f / f.sum()).astype(np.float32)


def blur_downsample(x: jax.Array, size: int, padding: str = "reflect", stride: int = 2) -> jax.Array:
  """Depthwise binomial blur then subsampling by `stride` (Zhang 2019 BlurPool), on NHWC input.

  The size-k binomial filter is k - 1 passes of the two-tap average [1, 1] / 2 per axis, so the blur is
  computed as shifted adds: exact, and its gradient is far cheaper on XLA:CPU than a grouped conv's
  (docs/performance.md).
  """
  _check(padding, BLUR_PADDINGS, "blur padding")
  if not 1 <= size <= 7:
    raise ValueError(f"blur filter size must be 1..7, got {size}")
  before, after = (size - 1) // 2, math.ceil((size - 1) / 2)
  if before or after:
    x = jnp.pad(x, ((0, 0), (before, after), (before, after), (0, 0)), mode=_JNP_PAD_MODE[padding])
  for _ in range(size - 1):
    x = 0.5 * (x[:, 1:] + x[:, :-1])
    x = 0.5 * (x[:, :, 1:] + x[:, :, :-1])
  return x[:, ::stride, ::stride]
