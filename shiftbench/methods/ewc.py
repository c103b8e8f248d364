"""EWC (Kirkpatrick et al., PNAS 2017, arXiv 1612.00796): full fine-tuning with λ/2 Σ F (w - w0)², F the
diagonal Fisher information of the pretrained model on A at pretraining placement, w0 its weights."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from shiftbench import models
from shiftbench.data import canvas, streams
from shiftbench.methods.base import Context, Finetuned, Method, Pretraining, check_grid
from shiftbench.methods.replay import pretraining_of

FISHER_BATCH = 32  # samples per compiled Fisher batch (per-sample gradients, vmapped)


@functools.cache
def _fisher_batch(graphdef: nnx.GraphDef, spec: canvas.CanvasSpec, placement, batch: int):
  """Sum over `batch` samples of A of the squared gradient of log p(y | x), y drawn from the model's own
  prediction (the true Fisher's Monte Carlo estimate), the model in eval mode."""

  def one(params, rest, obj, loc, key):
    def log_p(p):
      model = nnx.merge(graphdef, p, rest)
      logits = models.logits_on_canvas(model, obj[None], loc[None], spec.canvas_size)[0]
      y = jax.random.categorical(key, jax.lax.stop_gradient(logits))
      return jax.nn.log_softmax(logits)[y]

    return jax.tree.map(jnp.square, jax.grad(log_p)(params))

  def total(params, rest, images, key):
    k_idx, k_loc, k_y = jax.random.split(key, 3)
    idx = jax.random.randint(k_idx, (batch,), 0, images.shape[0])
    locs = canvas.sample_locations(k_loc, batch, spec, placement.regime, placement.location, placement.jitter)
    objs = images[idx].astype(jnp.float32) / 255.0
    per_sample = jax.vmap(one, in_axes=(None, None, 0, 0, 0))
    squares = per_sample(params, rest, objs, jnp.asarray(locs), jax.random.split(k_y, batch))
    return jax.tree.map(lambda s: s.sum(0), squares)

  return jax.jit(total)


def fisher_diagonal(a: Pretraining, samples: int, name: str = "ewc") -> dict[str, jax.Array]:
  """The diagonal Fisher of A's pretrained model on A at its pretraining placement, from `samples` draws
  (rounded up to whole batches of FISHER_BATCH) of the row's stream for `name`, by parameter path
  (`jax.tree_util.keystr`), the classifier's left out (B has its own)."""
  model = a.model()
  model.eval()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  program = _fisher_batch(graphdef, a.spec, a.placement, FISHER_BATCH)
  key = jax.random.fold_in(a.key, streams.name_id(name))
  batches = -(-samples // FISHER_BATCH)
  total = None
  for i in range(batches):
    part = program(params, rest, a.objects.images, jax.random.fold_in(key, i))
    total = part if total is None else jax.tree.map(jnp.add, total, part)
  flat = jax.tree_util.tree_flatten_with_path(total)[0]
  count = batches * FISHER_BATCH
  return {jax.tree_util.keystr(p): f / count for p, f in flat if models.CLASSIFIER_NAME not in jax.tree_util.keystr(p)}


class EWCState(NamedTuple):
  anchor: Any  # the weights training started from: the pretrained ones, for the transferred layers
  fisher: Any  # F per weight, zero for B's classifier
  inner: Any  # the optimiser's state


def _penalised(tx: optax.GradientTransformation, lam: float) -> optax.TransformUpdateFn:
  """The update: the gradient of λ/2 Σ F (w - w0)², λ F (w - w0), added before `tx` (the penalty is part
  of the loss, as in Kirkpatrick et al.)."""

  def update(updates, state, params):
    pulled = jax.tree.map(lambda g, f, w, w0: g + lam * f * (w - w0), updates, state.fisher, params, state.anchor)
    out, inner = tx.update(pulled, state.inner, params)
    return out, state._replace(inner=inner)

  return update


class EWC(Method):
  """EWC: full fine-tuning from a fresh classifier with λ/2 Σ F (w - w0)² on the transferred weights, one
  row per λ of `lambdas`; F is the diagonal Fisher of the pretrained model (A's classifier on it) on A's
  training objects at the pretraining placement, from `fisher_samples` draws. λ = 0 adds no term: plain
  full fine-tuning's own program."""

  name, title, colour, needs_pretraining = "ewc", "EWC", "#7f7f7f", True
  setting_name, setting_symbol = "lambda", "λ"

  # The default grid: at the quick geometry, sum F (w - w0)² after plain full fine-tuning is 0.13 (1e-3) and
  # 4.2 (1e-2), so λ = 1 makes the penalty there about 0.07-2 nats against a cross-entropy that starts at
  # log K: λ ∈ {1, 10, 100} spans weak to dominant (docs/protocol.md; a magnitude check, not a pilot).
  def __init__(self, lambdas: Sequence[float] = (1.0, 10.0, 100.0), fisher_samples: int = 1024):
    self.lambdas = check_grid(lambdas, "EWC lambdas", low=0.0)
    if not (isinstance(fisher_samples, int) and fisher_samples >= 1):
      raise ValueError(f"EWC fisher_samples must be an integer >= 1, got {fisher_samples!r}")
    self.fisher_samples = fisher_samples
    self._updates: dict[tuple, optax.TransformUpdateFn] = {}  # one per (optimiser, λ): no retrace

  def transform(self, tx: optax.GradientTransformation, lam: float, fisher: dict[str, jax.Array]):
    """`tx` after the penalty's gradient, F in its state (so every seed runs one compiled program); at
    λ = 0, `tx` itself."""
    if lam == 0:
      return tx
    if (tx, lam) not in self._updates:
      self._updates[tx, lam] = _penalised(tx, lam)

    def init(params):
      def f_of(path, w):
        name = jax.tree_util.keystr(path)
        return jnp.copy(fisher[name]) if name in fisher else jnp.zeros_like(w)

      aligned = jax.tree_util.tree_map_with_path(f_of, params)
      return EWCState(jax.tree.map(jnp.copy, params), aligned, tx.init(params))

    return optax.GradientTransformation(init, self._updates[tx, lam])

  def run(self, ctx: Context, setting: float | None) -> Finetuned:
    lam = float(setting)
    if lam == 0:
      return ctx.finetune(ctx.fresh(), mode="full", probe=True)
    fisher = fisher_diagonal(pretraining_of(ctx, self.name), self.fisher_samples, self.name)
    return ctx.finetune(ctx.fresh(), tx=self.transform(ctx.tx, lam, fisher), mode="full", probe=True)
