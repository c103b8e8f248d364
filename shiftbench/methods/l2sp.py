"""L2-SP under Adam (Li, Grandvalet & Davoine, ICML 2018, arXiv 1802.01483): full fine-tuning with β ||w -
w0||² on the transferred weights and (β x `classifier_ratio`) ||w||² on the new classifier, in the loss, so
the run's optimiser (Adam) rescales the penalty's gradient per coordinate: β is not Li et al.'s β (they used
SGD; `l2sp_sgd`). `l2sp_decoupled` applies the pull after the optimiser instead."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from shiftbench import models
from shiftbench.methods.base import Context, Finetuned, Method, check_grid


class L2SPState(NamedTuple):
  anchor: Any  # the weights training started from: the pretrained ones, for the transferred layers


def l2sp_penalty(beta: float, classifier_decay: float) -> optax.GradientTransformation:
  """Adds the gradient of beta ||w - w0||² (w0: the weights at `init`, i.e. the pretrained ones) for
  every weight outside the classifier and of classifier_decay ||w||² for the classifier's, before the
  optimiser: the penalty is part of the loss, as in Li et al. 2018."""

  def init(params):
    return L2SPState(jax.tree.map(jnp.copy, params))

  def update(updates, state, params):
    def one(path, g, w, w0):
      if models.CLASSIFIER_NAME in jax.tree_util.keystr(path):
        return g + 2.0 * classifier_decay * w
      return g + 2.0 * beta * (w - w0)

    return jax.tree_util.tree_map_with_path(one, updates, params, state.anchor), state

  return optax.GradientTransformation(init, update)


class L2SP(Method):
  """L2-SP: full fine-tuning from a fresh classifier with beta ||w - w0||² on the transferred weights and
  beta x `classifier_ratio` ||w||² (plain weight decay) on the new classifier, one row per beta of
  `betas`. Li et al. 2018 weigh the two terms separately (their α and β, chosen by cross-validation);
  here the classifier's weight is tied to beta by a fixed ratio, so one grid spans the method and beta =
  0 is plain full fine-tuning exactly."""

  name, title, colour = "l2sp", "L2-SP under Adam", "#17becf"
  setting_name, setting_symbol = "beta", "β"

  def __init__(self, betas: Sequence[float] = (0.001, 0.01, 0.1, 1.0), classifier_ratio: float = 0.1):
    self.betas = check_grid(betas, "L2-SP betas", low=0.0)
    if not float(classifier_ratio) >= 0:
      raise ValueError(f"L2-SP classifier_ratio must be >= 0, got {classifier_ratio}")
    self.classifier_ratio = float(classifier_ratio)
    self._transforms: dict[tuple, optax.GradientTransformation] = {}  # one per (optimiser, beta): no retrace

  def transform(self, tx: optax.GradientTransformation, beta: float) -> optax.GradientTransformation:
    """`tx` after the penalty's gradient; at beta = 0 (no penalty at all) `tx` itself, so the row runs
    plain full fine-tuning's own compiled program and matches it bit for bit (a chained zero penalty
    is the same arithmetic, but XLA fuses the program differently: last digits differ)."""
    if beta == 0:
      return tx
    key = (tx, beta)
    if key not in self._transforms:
      self._transforms[key] = optax.chain(l2sp_penalty(beta, beta * self.classifier_ratio), tx)
    return self._transforms[key]

  def run(self, ctx: Context, setting: float | None) -> Finetuned:
    return ctx.finetune(ctx.fresh(), tx=self.transform(ctx.tx, float(setting)), mode="full", probe=True)
