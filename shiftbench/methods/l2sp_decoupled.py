"""Decoupled L2-SP: the pull toward the pretrained weights applied after the optimiser's update, as AdamW
applies weight decay (Loshchilov & Hutter, ICLR 2019, arXiv 1711.05101), instead of as a loss term whose
gradient the optimiser rescales (Li, Grandvalet & Davoine, ICML 2018, arXiv 1802.01483; `l2sp`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from shiftbench import models
from shiftbench.methods.base import Context, Finetuned, Method, check_grid


class PullState(NamedTuple):
  anchor: Any  # w0: the weights training started from (the pretrained ones, for the transferred layers)
  pull: jax.Array  # η β: the fraction of (w - w0) taken off each step
  classifier_pull: jax.Array  # η β r: the fraction of the new classifier's w taken off each step
  inner: Any  # the optimiser's state


def _pulled(tx_update: optax.TransformUpdateFn) -> optax.TransformUpdateFn:
  """`tx_update`'s step u, then the pull: u - η β (w - w0) on the transferred weights, u - η β r w on the
  classifier (w: the weights before the step). The strengths are in the state, so every rate and β runs one
  compiled program."""

  def update(updates, state, params):
    out, inner = tx_update(updates, state.inner, params)

    def one(path, u, w, w0):
      if models.CLASSIFIER_NAME in jax.tree_util.keystr(path):
        return u - state.classifier_pull * w
      return u - state.pull * (w - w0)

    out = jax.tree_util.tree_map_with_path(one, out, params, state.anchor)
    return out, state._replace(inner=inner)

  return update


def decoupled_pull(
  tx: optax.GradientTransformation, rate: float, beta: float, classifier_ratio: float, _update=None
) -> optax.GradientTransformation:
  """`tx` followed by the pull toward `init`'s weights: w <- w + u - rate beta (w - w0), and w <- w + u -
  rate beta classifier_ratio w for the classifier, u being `tx`'s update. `_update`: a `_pulled(tx.update)`
  made before, to share its compiled program."""
  update = _update or _pulled(tx.update)

  def init(params):
    dtype = jax.tree.leaves(params)[0].dtype
    pull = jnp.asarray(rate * beta, dtype)
    classifier_pull = jnp.asarray(rate * beta * classifier_ratio, dtype)
    return PullState(jax.tree.map(jnp.copy, params), pull, classifier_pull, tx.init(params))

  return optax.GradientTransformation(init, update)


class L2SPDecoupled(Method):
  """Decoupled L2-SP: full fine-tuning from a fresh classifier where each step, after the optimiser's
  update u, the transferred weights are pulled toward the pretrained ones and the new classifier toward
  zero: w <- w + u - η β (w - w0) and w <- w + u - η β `classifier_ratio` w, η the row's rate, one row
  per β of `betas`. So k steps with no loss gradient shrink w - w0 by (1 - η β)^k, whatever the
  optimiser. Under plain SGD this is the coupled penalty (β/2) ||w - w0||² (`l2sp` at β/2), whose
  gradient is β (w - w0). β = 0 adds nothing: plain full fine-tuning's own program."""

  name, title, colour = "l2sp_decoupled", "L2-SP (decoupled)", "#1f77b4"
  setting_name, setting_symbol = "beta", "β"

  # The default grid, by magnitude (not a pilot): with no loss gradient w - w0 decays with a time constant
  # of 1 / (η β) steps, at 1e-3 1000, 100 and 10 steps against the 600-step budget, at 1e-2 100, 10 and 1.
  def __init__(self, betas: Sequence[float] = (1.0, 10.0, 100.0), classifier_ratio: float = 0.1):
    self.betas = check_grid(betas, "L2-SP (decoupled) betas", low=0.0)
    if not float(classifier_ratio) >= 0:
      raise ValueError(f"L2-SP (decoupled) classifier_ratio must be >= 0, got {classifier_ratio}")
    self.classifier_ratio = float(classifier_ratio)
    self._updates: dict[Any, optax.TransformUpdateFn] = {}  # one per optimiser update: no retrace

  def transform(self, tx: optax.GradientTransformation, rate: float, beta: float) -> optax.GradientTransformation:
    """`tx` and the pull at `rate` and `beta`; at beta = 0, `tx` itself (plain full's program, bit for bit).
    A pull of more than the whole distance (rate beta > 1, or rate beta classifier_ratio > 1) is refused."""
    if beta == 0:
      return tx
    strongest = rate * beta * max(1.0, self.classifier_ratio)
    if not 0 < strongest <= 1:
      raise ValueError(
        f"L2-SP (decoupled) at beta {beta:g} and rate {rate:g} pulls {strongest:g} of the way to w0 each step; "
        f"rate x beta x max(1, classifier_ratio) must lie in (0, 1]"
      )
    if tx.update not in self._updates:
      self._updates[tx.update] = _pulled(tx.update)
    return decoupled_pull(tx, rate, beta, self.classifier_ratio, self._updates[tx.update])

  def run(self, ctx: Context, setting: float | None) -> Finetuned:
    if ctx.rate is None:
      raise ValueError(f"method {self.name!r} needs the row's rate (ctx.rate), got None")
    tx = self.transform(ctx.tx, float(ctx.rate), float(setting))
    return ctx.finetune(ctx.fresh(), tx=tx, mode="full", probe=True)
