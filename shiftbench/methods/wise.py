"""WiSE-FT (Wortsman et al., CVPR 2022, arXiv 2109.01903): every weight interpolated between the `last`
and `full` rows' models, (1 - α) θ_last + α θ_full, BatchNorm statistics re-estimated on B in between; no
training."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from shiftbench.methods.base import Context, Finetuned, Method, check_grid


def interpolate(a: nnx.Module, b: nnx.Module, alpha: float) -> nnx.Module:
  """(1 - alpha) a + alpha b for every floating-point variable (params and BatchNorm statistics alike),
  as a new model; other state (integer counters) is b's and must equal a's. alpha = 0 gives a's
  numbers exactly and alpha = 1 b's (x * 1 + 0 * y = x in IEEE arithmetic for finite y)."""
  graphdef, state_a = nnx.split(a)
  _, state_b = nnx.split(b)

  def mix(x, y):
    if jnp.issubdtype(jnp.result_type(x), jnp.floating):
      return (1.0 - alpha) * x + alpha * y
    if not bool(jnp.all(x == y)):
      raise ValueError("the models to interpolate differ in non-float state")
    return jnp.copy(y)

  return nnx.merge(graphdef, jax.tree.map(mix, state_a, state_b))


def wise_model(ctx: Context, a: nnx.Module, b: nnx.Module, alpha: float) -> nnx.Module:
  """WiSE-FT's model at `alpha` between ends `a` and `b` (`interpolate`): for 0 < alpha < 1 with its
  BatchNorm statistics re-estimated on B (`ctx.recalibrate`); the ends are the trained models themselves."""
  model = interpolate(a, b, alpha)
  return ctx.recalibrate(model) if 0 < alpha < 1 else model


class WiSEFT(Method):
  """WiSE-FT: θ(α) = (1 - α) θ_last + α θ_full, every weight, one row per α of `alphas`; evaluated, never
  trained. For 0 < α < 1 its BatchNorm statistics are re-estimated on B (`ctx.recalibrate`: interpolated
  weights, measured statistics). α = 0 is exactly the `last` row, α = 1 the `full` row."""

  name, title, colour, needs = "wise", "WiSE-FT", "#ff7f0e", ("last", "full")
  setting_name, setting_symbol = "alpha", "α"

  def __init__(self, alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)):
    self.alphas = check_grid(alphas, "WiSE-FT alphas", low=0.0, high=1.0)

  def run(self, ctx: Context, setting: float | None) -> Finetuned:
    model = wise_model(ctx, ctx.tuned("last"), ctx.tuned("full"), float(setting))
    return Finetuned(model, [], [], {"rule": "interpolated", "step": 0, "alpha": float(setting)}, 0.0)
