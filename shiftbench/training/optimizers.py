"""One optimiser for every fine-tune learning rate: the rate is a value in the optimiser's state, not a
constant of its compiled step, so the rates of a run share one training program per mode and compile it
once (docs/performance.md).

`at_rates(factory, rates)` wraps `factory` (an optax optimiser's constructor, e.g. `optax.adam`, with its
other settings bound) in `optax.inject_hyperparams` with only `learning_rate` injected: every other
setting stays a constant of the program, as it was. Each rate's transformation shares the one `update`
function (`loop.train` keys its compiled programs by it) and differs only in `init`, which puts its rate
into the state.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import jax.numpy as jnp
import optax

RATE = "learning_rate"


def at_rates(
  factory: Callable[..., optax.GradientTransformation], rates: Iterable[float]
) -> dict[float, optax.GradientTransformation]:
  """{rate: the optimiser at that rate}, all sharing one `update` function (the rate is read from the state).
  A factory whose signature names no `learning_rate` (one taking `**kwargs`) is built once per rate instead,
  each rate its own program."""
  rates = list(rates)
  try:
    names = list(inspect.signature(factory).parameters)
  except (TypeError, ValueError):  # no signature to read
    names = []
  if RATE not in names:
    return {rate: factory(learning_rate=rate) for rate in rates}
  if not rates:
    return {}
  shared = optax.inject_hyperparams(factory, static_args=[n for n in names if n != RATE])(learning_rate=rates[0])

  def init_at(rate: float) -> optax.TransformInitFn:
    def init(params):
      state = shared.init(params)
      dtype = state.hyperparams[RATE].dtype
      return state._replace(hyperparams={**state.hyperparams, RATE: jnp.asarray(rate, dtype)})

    return init

  return {rate: optax.GradientTransformation(init_at(rate), shared.update) for rate in rates}
