"""A uniform model soup (Wortsman et al., ICML 2022, arXiv 2203.05482): the plain `full` rows' models at
every fine-tune rate of the run, averaged weight by weight; evaluated, never trained."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from shiftbench.methods.base import Context, Finetuned, Method


def uniform_soup(ingredients: Sequence[nnx.Module]) -> nnx.Module:
  """The mean of every floating-point variable (params and BatchNorm statistics alike) over `ingredients`,
  summed in their order, as a new model; other state (integer counters) must be equal and is the first's.
  A soup of one model is that model exactly (x / 1 = x)."""
  if not ingredients:
    raise ValueError("a soup needs one or more models, got none")
  graphdef, first = nnx.split(ingredients[0])
  states = [first] + [nnx.split(m)[1] for m in ingredients[1:]]

  def mean(*xs):
    if jnp.issubdtype(jnp.result_type(xs[0]), jnp.floating):
      total = xs[0]
      for x in xs[1:]:
        total = total + x
      return total / len(xs)
    if not all(bool(jnp.all(x == xs[0])) for x in xs[1:]):
      raise ValueError("the models to average differ in non-float state")
    return jnp.copy(xs[0])

  return nnx.merge(graphdef, jax.tree.map(mean, *states))


class Soup(Method):
  """The uniform soup of plain `full` fine-tuning over the run's rates (`ctx.rates`), all from one
  pretrained model, seed and fresh classifier, so they share a basin more often than not (Wortsman et al.'s
  condition). It has one row at every rate, each the same model: its numbers beside that rate's plain
  `full` row. Its rows run after every rate's plain rows (`across_rates`)."""

  name, title, colour, needs, across_rates = "soup", "uniform soup", "#bcbd22", ("full",), True

  def run(self, ctx: Context, setting: float | None) -> Finetuned:
    soup = uniform_soup([ctx.tuned_at("full", rate) for rate in ctx.rates])
    return Finetuned(soup, [], [], {"rule": "soup", "step": 0, "rates": list(ctx.rates)}, 0.0)
