"""Fine-tuning methods: how the pretrained model becomes B's model, one row per method and setting.

A method is named by `_target_` in `finetune.methods`, like a model, and run by the protocol once per
row through `Method.run(ctx, setting)`. The context (`Context`) hands it everything it may start from
and the one way to train: the pretrained layers with B's fresh classifier (`ctx.fresh()`), copies of
the plain rows' fine-tuned models of the same model, regime, rate and seed (`ctx.tuned("last")`), the
row's optimiser (`ctx.tx`) and `ctx.finetune(model, ...)`, which trains on B at the fine-tune location
with the row's budget, batches, stopping rule and curve. So a method changes only what it is about.

- `Plain`: today's fine-tuning at a mode (`last`, `head`, `full`).
- `LPFT` (Kumar et al., ICLR 2022, arXiv 2202.10054): full fine-tuning from the `last` row's model (the
  pretrained layers with the linear probe trained on B) instead of a fresh classifier.
- `WiSEFT` (Wortsman et al., CVPR 2022, arXiv 2109.01903): every weight interpolated between the
  `last` and `full` rows' models, (1 - α) θ_last + α θ_full, BatchNorm statistics included; no training.
- `L2SP` (Li, Grandvalet & Davoine, ICML 2018, arXiv 1802.01483): full fine-tuning with β ||w - w0||²
  on the transferred weights and (β x `classifier_ratio`) ||w||² on the new classifier.

A plain function works too: `{_target_: mypkg.my_method, _partial_: true}` runs `my_method(ctx)` (or
`my_method(ctx, setting)` for a gridded one) and names its rows by the function (docs/development.md).
No config system here: `Settings` builds the methods.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from shiftbench import models
from shiftbench.rows import schema


@dataclasses.dataclass
class Finetuned:
  """A fine-tuned model, its curve and history, where training stopped, and how long it took."""

  model: nnx.Module
  curve: list[dict[str, Any]]
  history: list[dict[str, float]]
  stop: dict[str, Any]
  seconds: float


@dataclasses.dataclass(frozen=True)
class Context:
  """What a method's row may start from, and how it trains (built by the protocol for each row).

  fresh: the pretrained layers with B's fresh classifier, a new copy on every call (what plain
    fine-tuning starts from).
  tuned: `tuned(mode)` is a copy of the plain row's fine-tuned model at `mode` (`last`, `head`, `full`)
    of the same model, regime, rate and seed.
  tx: the fine-tune optimiser at the row's learning rate.
  finetune: `finetune(model, tx=None, mode="full", probe=False)` trains `model` in place on B at the
    fine-tune location and returns `Finetuned`; `tx` replaces the row's optimiser; `probe=True` takes
    the curve's step 0 from the `last` row's final point instead of measuring it (right for a model that
    is the pretrained layers read by that probe, or starts from the same fresh classifier as plain).
  mode: the row's fine-tune mode.
  """

  fresh: Callable[[], nnx.Module]
  tuned: Callable[[str], nnx.Module]
  tx: optax.GradientTransformation
  finetune: Callable[..., Finetuned]
  mode: str = "full"


class Method:
  """A fine-tuning method: its rows' `finetune_method` name, the mode its rows are labelled with, the
  plain rows it starts from (`needs`, checked against the run's modes before anything trains), and its
  grid (`settings`: one row each, the value stored in the identity field `grid_field`)."""

  name: str = ""
  mode: str = "full"
  needs: tuple[str, ...] = ()
  grid_field: str | None = None  # schema.WISE_ALPHA / schema.L2SP_BETA, or None (one row, no setting)
  grid_arg: str | None = None  # the constructor argument that holds the grid (not part of the comparison key)

  def settings(self) -> tuple[float | None, ...]:
    return (None,)

  def run(self, ctx: Context, setting: float | None) -> Finetuned | nnx.Module:
    """B's model for one row: `ctx.finetune(...)`'s result, or a bare model evaluated as it is."""
    raise NotImplementedError


class Plain(Method):
  """Fine-tuning at the row's mode from a fresh classifier (head and full curves start at the probe)."""

  name = schema.PLAIN

  def run(self, ctx: Context, setting: float | None) -> Finetuned:
    return ctx.finetune(ctx.fresh(), mode=ctx.mode, probe=ctx.mode != "last")


class LPFT(Method):
  """LP-FT: full fine-tuning that starts from the `last` row's model, so the first step's classifier is
  the trained linear probe, not a random one (Kumar et al. 2022: a random head distorts the features).
  Step 0 of its curve is that probe's final point: the very model it starts from."""

  name, needs = "lpft", ("last",)

  def run(self, ctx: Context, setting: float | None) -> Finetuned:
    return ctx.finetune(ctx.tuned("last"), mode="full", probe=True)


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


class WiSEFT(Method):
  """WiSE-FT: θ(α) = (1 - α) θ_last + α θ_full, every weight and BatchNorm statistic, one row per α of
  `alphas`; evaluated, never trained. α = 0 is exactly the `last` row, α = 1 the `full` row."""

  name, needs, grid_field, grid_arg = "wise", ("last", "full"), schema.WISE_ALPHA, "alphas"

  def __init__(self, alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)):
    self.alphas = _grid(alphas, "WiSE-FT alphas", low=0.0, high=1.0)

  def settings(self) -> tuple[float, ...]:
    return self.alphas

  def run(self, ctx: Context, setting: float | None) -> Finetuned:
    model = interpolate(ctx.tuned("last"), ctx.tuned("full"), float(setting))
    return Finetuned(model, [], [], {"rule": "interpolated", "step": 0, "alpha": float(setting)}, 0.0)


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

  name, needs, grid_field, grid_arg = "l2sp", (), schema.L2SP_BETA, "betas"

  def __init__(self, betas: Sequence[float] = (0.001, 0.01, 0.1, 1.0), classifier_ratio: float = 0.1):
    self.betas = _grid(betas, "L2-SP betas", low=0.0)
    if not float(classifier_ratio) >= 0:
      raise ValueError(f"L2-SP classifier_ratio must be >= 0, got {classifier_ratio}")
    self.classifier_ratio = float(classifier_ratio)
    self._transforms: dict[tuple, optax.GradientTransformation] = {}  # one per (optimiser, beta): no retrace

  def settings(self) -> tuple[float, ...]:
    return self.betas

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


class FunctionMethod(Method):
  """A user's function as a method: `fn(ctx)` (or `fn(ctx, setting)`), returning `Finetuned` (from
  `ctx.finetune`) or a bare model (`as_finetuned`)."""

  def __init__(self, fn: Callable[..., Any], name: str | None = None):
    self.fn = fn
    target = fn.func if isinstance(fn, functools.partial) else fn
    self.name = name or getattr(target, "__name__", "")
    self.takes_setting = len(inspect.signature(fn).parameters) >= 2

  def run(self, ctx: Context, setting: float | None) -> Finetuned | nnx.Module:
    return self.fn(ctx, setting) if self.takes_setting else self.fn(ctx)


def as_finetuned(out: Any, name: str) -> Finetuned:
  """What a method's `run` returned: `Finetuned` (from `ctx.finetune`), or a bare model, evaluated as it
  is (no training of its own: no curve, stopped at step 0)."""
  if isinstance(out, nnx.Module):
    return Finetuned(out, [], [], {"rule": "none", "step": 0}, 0.0)
  if not isinstance(out, Finetuned):
    raise TypeError(f"method {name!r} returned {type(out).__name__}; return ctx.finetune(...) or a model")
  return out


def as_method(built: Any, name: str | None = None) -> Method:
  """What a `finetune.methods` entry built: a `Method` (renamed when the entry gives a `name`), or a
  callable wrapped as one."""
  if isinstance(built, Method):
    if name:
      built.name = name
    if not built.name:
      raise ValueError(f"method {type(built).__name__} has no name; give the entry a name: key")
    return built
  if callable(built):
    return FunctionMethod(built, name)
  raise TypeError(f"a finetune.methods entry built {type(built).__name__}; it must build a Method or a function")


def copy_model(model: nnx.Module) -> nnx.Module:
  """A copy with its own buffers: training it (which donates its buffers) leaves `model` intact."""
  graphdef, state = nnx.split(model)
  return nnx.merge(graphdef, jax.tree.map(jnp.copy, state))


def _grid(values: Sequence[float], what: str, low: float, high: float | None = None) -> tuple[float, ...]:
  values = [float(v) for v in values]
  if not values:
    raise ValueError(f"{what} is empty; give one or more values")
  bad = [v for v in values if not (v >= low and (high is None or v <= high))]
  if bad:
    bounds = f"[{low:g}, {high:g}]" if high is not None else f">= {low:g}"
    raise ValueError(f"{what} must lie in {bounds}, got {bad} in {values}")
  if len(set(values)) != len(values):
    raise ValueError(f"{what} has a value twice: {values}")
  return tuple(sorted(values))


__all__ = [
  "L2SP",
  "LPFT",
  "Context",
  "Finetuned",
  "FunctionMethod",
  "Method",
  "Plain",
  "WiSEFT",
  "as_finetuned",
  "as_method",
  "copy_model",
  "interpolate",
  "l2sp_penalty",
]
