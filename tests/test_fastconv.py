"""The patches + matmul convolution equals XLA's, in value and in both gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from shiftbench.models import fastconv, layers

DN = ("NHWC", "HWIO", "NHWC")


def _both(x, w, stride, padding="VALID"):
  ref = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=DN)
  new = lambda x, w: fastconv.patch_conv(x, w, (stride, stride), padding, dimension_numbers=DN)
  return ref, new


@pytest.mark.parametrize("stride", [1, 2])
def test_values_and_gradients_match_xla(stride, cin=3):
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x0 = jax.random.normal(kx, (2, 11, 11, cin))
  w = jax.random.normal(kw, (3, 3, cin, 6))

  @jax.jit
  def value_and_grads(x0, w):  # every padding mode in one compiled program keeps the test fast
    out = {}
    for padding in layers.PADDINGS:
      pad, mode = layers.conv_padding(3, padding)  # what PaddedConv does before its VALID conv
      x = jnp.pad(x0, ((0, 0), pad, pad, (0, 0)), mode=mode)
      ref, new = _both(x, w, stride)
      g = jax.random.normal(kg, jax.eval_shape(ref, x, w).shape)
      for name, f in (("ref", ref), ("new", new)):
        y, vjp = jax.vjp(f, x, w)
        out[padding, name] = (y, *vjp(g))
    return out

  got = value_and_grads(x0, w)
  for padding in layers.PADDINGS:  # value, input gradient, kernel gradient
    for a, b in zip(got[padding, "new"], got[padding, "ref"]):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=padding)


def test_explicit_padding_pairs_and_fallbacks():
  x = jax.random.normal(jax.random.key(1), (2, 9, 9, 3))
  w = jax.random.normal(jax.random.key(2), (3, 3, 3, 4))
  for padding in (((1, 1), (1, 1)), ((0, 2), (2, 0)), "SAME"):
    ref, new = _both(x, w, 1, padding)
    np.testing.assert_allclose(jax.jit(new)(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
  dilated = jax.jit(lambda x, w: fastconv.patch_conv(x, w, (1, 1), "VALID", rhs_dilation=(2, 2),
                                                     dimension_numbers=DN))(x, w)
  np.testing.assert_allclose(dilated, lax.conv_general_dilated(x, w, (1, 1), "VALID", rhs_dilation=(2, 2),
                                                               dimension_numbers=DN), rtol=1e-5, atol=1e-5)

