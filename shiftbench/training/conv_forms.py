"""Which convolutions of a traced training step XLA:CPU runs slowly inside a loop.

XLA:CPU runs a convolution with its Eigen kernels only in one form: batch first and features last on the
input and output, spatial dimensions first and then in/out features on the kernel (NHWC/HWIO/NHWC in 2-D).
Outside a loop it rewrites a conv in another form into that one; inside a `lax.scan` it does not, and the
conv runs as a generic loop: a scanned step ran 8x (docs/api.md's example) to ~20x (docs/performance.md)
slower. JAX's own conv gradients are in other forms:
the kernel gradient swaps batch and features, the input gradient swaps the kernel's in and out features. So
a model with `nnx.Conv` trains fast one step per dispatch, and slowly ten steps per dispatch, unless its
convs compute their gradients in the Eigen form (`layers.conv_general_dilated`).
"""

from __future__ import annotations

from collections.abc import Iterator

from jax.extend import core


def _eigen_form(dimension_numbers) -> bool:
  """Whether a conv's `ConvDimensionNumbers` (positions of each operand's dimensions) are the Eigen form."""
  lhs, rhs, out = dimension_numbers
  n = len(lhs)
  batch_features_first = (0, n - 1, *range(1, n - 1))  # positions of N, C, then spatial: NHWC
  return tuple(lhs) == tuple(out) == batch_features_first and tuple(rhs) == (n - 1, n - 2, *range(n - 2))


def _convs(jaxpr: core.Jaxpr) -> Iterator[core.JaxprEqn]:
  """Every `conv_general_dilated` of `jaxpr`, also inside its sub-jaxprs (scans, conds, calls)."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(sub, core.ClosedJaxpr):
          yield from _convs(sub.jaxpr)
        elif isinstance(sub, core.Jaxpr):
          yield from _convs(sub)


def slow_in_a_loop(jaxpr: core.Jaxpr | core.ClosedJaxpr) -> int:
  """How many convs of `jaxpr` (a traced training step: forward and gradient) are not in the Eigen form,
  and so run as generic loops on XLA:CPU inside a `lax.scan`."""
  jaxpr = jaxpr.jaxpr if isinstance(jaxpr, core.ClosedJaxpr) else jaxpr
  return sum(not _eigen_form(eqn.params["dimension_numbers"]) for eqn in _convs(jaxpr))
