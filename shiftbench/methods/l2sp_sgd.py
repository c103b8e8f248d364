"""L2-SP under SGD with momentum 0.9, as Li, Grandvalet & Davoine ran it (ICML 2018, arXiv 1802.01483): the
control that says how much of plain fine-tuning's forgetting, and of L2-SP's effect, is Adam's."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import optax

from shiftbench.methods.base import Context, Finetuned, Method, check_grid
from shiftbench.methods.l2sp import l2sp_penalty
from shiftbench.training import optimizers

MOMENTUM = 0.9  # Li et al.'s


class L2SPSGD(Method):
  """L2-SP under SGD: full fine-tuning from a fresh classifier with `l2sp`'s penalty (β ||w - w0||² on the
  transferred weights, β `classifier_ratio` ||w||² on the new classifier, in the loss), trained by SGD with
  momentum 0.9 at `rate_factor` x the row's rate instead of the run's optimiser, one row per β of
  `betas`. β = 0 is plain full fine-tuning under SGD, `optax.sgd(rate_factor x rate, momentum=0.9)`
  exactly: the control row.

  The run's rates are Adam's, hence the factor; its default, 1, was set by a validation pilot: at the
  row's own rate SGD's validation in-location accuracy is within 0.02 of Adam's (docs/protocol.md,
  "Fine-tuning methods"; docs/results.md). Li et al.'s penalty is α/2 ||w - w0||², so β here is α/2: the
  grid is α ∈ {0.01, 0.1, 1}, a decade each side of the usually quoted α = 0.1."""

  name, title, colour = "l2sp_sgd", "L2-SP under SGD", "#2ca02c"
  setting_name, setting_symbol = "beta", "β"

  def __init__(
    self, betas: Sequence[float] = (0.0, 0.005, 0.05, 0.5), classifier_ratio: float = 0.1, rate_factor: float = 1.0
  ):
    self.betas = check_grid(betas, "L2-SP under SGD betas", low=0.0)
    if not float(classifier_ratio) >= 0:
      raise ValueError(f"L2-SP under SGD classifier_ratio must be >= 0, got {classifier_ratio}")
    self.classifier_ratio = float(classifier_ratio)
    if not float(rate_factor) > 0:
      raise ValueError(f"L2-SP under SGD rate_factor must be > 0, got {rate_factor}")
    self.rate_factor = float(rate_factor)
    # Every SGD rate shares one update function (the rate is in the state); 1.0 only seeds the mapping.
    self._sgd = optimizers.at_rates(functools.partial(optax.sgd, momentum=MOMENTUM), (1.0,))
    self._updates: dict[tuple, optax.TransformUpdateFn] = {}  # one per (SGD's update, β): every rate shares it

  def sgd(self, rate: float) -> optax.GradientTransformation:
    """SGD with momentum 0.9 at `rate_factor` x `rate`."""
    return self._sgd.at(self.rate_factor * rate)

  def transform(self, tx: optax.GradientTransformation, beta: float) -> optax.GradientTransformation:
    """`tx` after the penalty's gradient, as `l2sp`'s; at beta = 0, `tx` itself."""
    if beta == 0:
      return tx
    penalty = l2sp_penalty(beta, beta * self.classifier_ratio)
    if (tx.update, beta) not in self._updates:
      self._updates[tx.update, beta] = optax.chain(penalty, tx).update
    return optax.GradientTransformation(
      lambda params: (penalty.init(params), tx.init(params)), self._updates[tx.update, beta]
    )

  def run(self, ctx: Context, setting: float | None) -> Finetuned:
    if ctx.rate is None:
      raise ValueError(f"method {self.name!r} needs the row's rate (ctx.rate), got None")
    tx = self.transform(self.sgd(float(ctx.rate)), float(setting))
    return ctx.finetune(ctx.fresh(), tx=tx, mode="full", probe=True)
