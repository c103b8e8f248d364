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
from collections.abc import Callable, Iterable, Iterator, Mapping

import jax.numpy as jnp
import optax

RATE = "learning_rate"


class AtRates(Mapping):
  """{rate: the optimiser at that rate} for the run's rates (iteration, `len`, `[rate]`), and `at(rate)` for
  any other rate (a method's own: LP-FT's probe and second stage), all sharing one `update` function."""

  def __init__(self, factory: Callable[..., optax.GradientTransformation], rates: Iterable[float]):
    self.rates = tuple(rates)
    try:
      names = list(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # no signature to read
      names = []
    self._factory, self._shared, self._built = factory, None, {}
    if RATE in names and self.rates:
      static = [n for n in names if n != RATE]
      self._shared = optax.inject_hyperparams(factory, static_args=static)(learning_rate=self.rates[0])
    for rate in self.rates:
      self.at(rate)

  def at(self, rate: float) -> optax.GradientTransformation:
    """The optimiser at `rate`, made once; every rate's shares `update` (a factory whose signature names no
    `learning_rate`, one taking `**kwargs`, is built once per rate instead, each rate its own program)."""
    rate = float(rate)
    if rate not in self._built:
      if self._shared is None:
        self._built[rate] = self._factory(learning_rate=rate)
      else:
        shared = self._shared

        def init(params):
          state = shared.init(params)
          dtype = state.hyperparams[RATE].dtype
          return state._replace(hyperparams={**state.hyperparams, RATE: jnp.asarray(rate, dtype)})

        self._built[rate] = optax.GradientTransformation(init, shared.update)
    return self._built[rate]

  def __getitem__(self, rate: float) -> optax.GradientTransformation:
    if float(rate) not in self.rates:
      raise KeyError(rate)
    return self._built[float(rate)]

  def __iter__(self) -> Iterator[float]:
    return iter(self.rates)

  def __len__(self) -> int:
    return len(self.rates)


def at_rates(factory: Callable[..., optax.GradientTransformation], rates: Iterable[float]) -> AtRates:
  """{rate: the optimiser at that rate}, all sharing one `update` function (the rate is read from the state);
  `.at(rate)` gives it at any other rate, sharing the same function."""
  return AtRates(factory, rates)
