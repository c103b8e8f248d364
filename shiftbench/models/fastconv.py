"""Convolution as patches + one matmul, a drop-in for `lax.conv_general_dilated` in `nnx.Conv`.

The networks here are small (1-64 channels, 32-64 px canvases), where XLA:CPU's convolution kernels run
far below matmul speed (a 1 -> 8 channel conv reached ~3 GFLOP/s). Gathering the k x k patches with
strided slices and multiplying them by the reshaped kernel turns every conv, and through autodiff both of
its gradients, into one GEMM plus cheap slicing that XLA fuses. Measured side by side (README
"Performance", `scripts/bench.py --alternatives`) it did not win robustly: training tied with XLA's conv
within noise and forward-only evaluation was slower, so `PaddedConv` keeps XLA's conv and this stays an
opt-in (`nnx.Conv(..., conv_general_dilated=patch_conv)`) with its gradients tested against XLA's.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def _dims_are_nhwc(dimension_numbers) -> bool:
  if dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return dimension_numbers == lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
  return tuple(dimension_numbers) == _NHWC


def patches(x: jax.Array, kernel_hw: tuple[int, int], strides: tuple[int, int]) -> jax.Array:
  """(B, H, W, C) -> (B, Ho, Wo, kh * kw * C): every VALID window, in the (kh, kw, C) order of HWIO."""
  kh, kw = kernel_hw
  sh, sw = strides
  _, h, w, _ = x.shape
  ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
  cols = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :] for i in range(kh) for j in range(kw)]
  return jnp.concatenate(cols, axis=-1) if len(cols) > 1 else cols[0]


def patch_conv(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding,
               lhs_dilation=None, rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
               precision=None, **kwargs) -> jax.Array:
  """`lax.conv_general_dilated` for NHWC/HWIO 2-D convs as patches @ kernel; anything else falls back.

  Explicit padding pairs are applied with `jnp.pad` first; `PaddedConv` always passes VALID, so that
  path has no padding at all. The gradients come from autodiff of slice/concat/dot: the kernel gradient
  is patches^T @ g and the input gradient is g @ kernel^T scattered back by the slices' transposes.
  """
  plain = (_dims_are_nhwc(dimension_numbers) and feature_group_count == 1 and lhs.ndim == 4
           and all(d == 1 for d in (lhs_dilation or (1, 1))) and all(d == 1 for d in (rhs_dilation or (1, 1)))
           and not kwargs)
  if not plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision, **kwargs)
  if isinstance(padding, str):
    if padding.upper() != "VALID":
      return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                      dimension_numbers, feature_group_count, precision=precision)
  elif any(p != (0, 0) for p in map(tuple, padding)):
    lhs = jnp.pad(lhs, ((0, 0), *map(tuple, padding), (0, 0)))
  kh, kw, cin, cout = rhs.shape
  cols = patches(lhs, (kh, kw), tuple(window_strides))
  b, ho, wo, k = cols.shape
  out = jnp.dot(cols.reshape(b * ho * wo, k), rhs.reshape(kh * kw * cin, cout), precision=precision)
  return out.reshape(b, ho, wo, cout)

