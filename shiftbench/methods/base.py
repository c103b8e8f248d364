"""What every fine-tuning method is made of: the `Method` class, the context a row runs in, and what it returns.

A method is named by `_target_` in `finetune.methods`, like a model (or by its name, for the built-ins
registered in `shiftbench.methods.BUILTIN`), and run by the protocol once per row through
`Method.run(ctx, setting)`. The context (`Context`) hands it everything it may start from and the one way
to train: the pretrained layers with B's fresh classifier (`ctx.fresh()`), copies of the plain rows'
fine-tuned models of the same model, regime, rate and seed (`ctx.tuned("last")`), the row's optimiser
(`ctx.tx`) and `ctx.finetune(model, ...)`, which trains on B at the fine-tune location with the row's
budget, batches, stopping rule and curve. So a method changes only what it is about.

A plain function works too: `{_target_: mypkg.my_method, _partial_: true}` runs `my_method(ctx)` and
names its rows by the function (docs/development.md). No config system here: `Settings` builds the methods.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from shiftbench.data import canvas
from shiftbench.data.device import DeviceObjects
from shiftbench.rows import method_info, schema
from shiftbench.training.step import Placement


@dataclasses.dataclass
class Finetuned:
  """A fine-tuned model, its curve and history, where training stopped, and how long it took."""

  model: nnx.Module
  curve: list[dict[str, Any]]
  history: list[dict[str, float]]
  stop: dict[str, Any]
  seconds: float


@dataclasses.dataclass(frozen=True)
class Pretraining:
  """The task the row's pretrained model learnt (A), for methods that keep it (replay, EWC).

  model: a copy of the model as pretrained, A's classifier on it, on every call.
  objects: A's training objects (on the device).
  placement: where pretraining put them (the row's regime, its location and jitter).
  spec: the canvas.
  key: the row's stream for draws from A (`streams.method_stream` folds a method's name into it).
  """

  model: Callable[[], nnx.Module]
  objects: DeviceObjects
  placement: Placement
  spec: canvas.CanvasSpec
  key: jax.Array


@dataclasses.dataclass(frozen=True)
class Context:
  """What a method's row may start from, and how it trains (built by the protocol for each row).

  fresh: the pretrained layers with B's fresh classifier, a new copy on every call (what plain
    fine-tuning starts from).
  tuned: `tuned(mode)` is a copy of the plain row's fine-tuned model at `mode` (`last`, `head`, `full`)
    of the same model, regime, rate and seed.
  tx: the fine-tune optimiser at the row's learning rate.
  finetune: `finetune(model, tx=None, mode="full", probe=False, replay=None, steps=None, curve=True)` trains
    `model` in place on B at the fine-tune location and returns `Finetuned`; `tx` replaces the row's
    optimiser; `steps` the row's budget (trained to the end: no stopping rule); `curve=False` measures no
    curve (a stage the row does not report); `probe=True`
    takes the curve's step 0 from the `last` row's final point instead of measuring it (right for a model
    that is the pretrained layers read by that probe, or starts from the same fresh classifier as plain);
    `mode` may also be `surgical` (`models.trainable`); `replay` is `loop.train`'s (part of each batch from A).
  mode: the row's fine-tune mode.
  pretraining: A, the task the model was pretrained on (`Pretraining`); None after `scratch` or ImageNet
    weights (whose task is not A).
  rates: every fine-tune rate of the run, ascending.
  tuned_at: `tuned_at(mode, rate)`, a copy of the plain row's fine-tuned model at `mode` and `rate` of the
    same model, regime and seed (a method with `across_rates`: its rows run after every rate's plain rows).
  rate: the row's fine-tune learning rate (what `tx` runs at).
  at_rate: `at_rate(rate)`, the row's optimiser at another rate (one compiled program for every rate).
  once: `once(name, compute)`, `compute()`'s value computed once for the rows of one pretrained model (model,
    regime, seed: every rate and method) and shared by them, on any thread; `name` must say everything the
    value depends on. The value is shared: copy a model (`copy_model`) before training it.
  validate: `validate(model)`, B's validation in-location accuracy of `model` (never test): what a method
    chooses its own settings by.
  recalibrate: `recalibrate(model)`, a copy of `model` with its BatchNorm running statistics re-estimated on
    B's training objects at the fine-tune location (`model` itself without BatchNorm).
  """

  fresh: Callable[[], nnx.Module]
  tuned: Callable[[str], nnx.Module]
  tx: optax.GradientTransformation
  finetune: Callable[..., Finetuned]
  mode: str = "full"
  pretraining: Pretraining | None = None
  rates: tuple[float, ...] = ()
  tuned_at: Callable[[str, float], nnx.Module] | None = None
  rate: float | None = None
  at_rate: Callable[[float], optax.GradientTransformation] | None = None
  once: Callable[[str, Callable[[], Any]], Any] | None = None
  validate: Callable[[nnx.Module], float | None] | None = None
  recalibrate: Callable[[nnx.Module], nnx.Module] | None = None


class Method:
  """A fine-tuning method, said once: how its rows are named and shown, its grid, the plain rows it
  starts from, and what one row runs.

  `name` is its rows' `finetune_method`; `title`, `colour` and `setting_symbol` are how figures show them
  (`describe`: written into results.json, since the tables import no jax and so never this class). A
  method with a grid names what one value is (`setting_name`, e.g. "alpha") and takes the grid as the
  constructor argument of the plural name (`alphas`, `grid_arg`), kept as the attribute of that name
  (checked by `check_grid`): one row per value, the value in the row's `method_setting`. The grid is row
  identity, so it stays out of the comparison key; every other argument of the entry goes in (`method.*`).
  `needs`: the plain modes whose rows it starts from, checked against the run's modes before anything
  trains; `mode`: the fine-tune mode its rows are labelled with; `across_rates`: it starts from the plain
  rows at every rate of the run (`ctx.tuned_at`), so its rows, one per rate, run after all of them;
  `needs_pretraining`: it reads A, the pretraining task (`ctx.pretraining`)."""

  name: str = ""
  title: str = ""  # how figures and legends name it ("WiSE-FT"); empty: its name
  colour: str | None = None  # its colour in figures (any matplotlib colour); None: one of the default cycle
  setting_name: str | None = None  # what one value of its grid is ("alpha"); None: one row, no setting
  setting_symbol: str = ""  # how figures write the setting ("α"); empty: `setting_name`
  mode: str = "full"
  needs: tuple[str, ...] = ()
  across_rates: bool = False
  needs_pretraining: bool = False  # it reads A (`ctx.pretraining`): refused after ImageNet weights

  @classmethod
  def grid_arg(cls) -> str | None:
    """The constructor argument (and attribute) that holds the grid: `setting_name` + "s"; None without one."""
    return None if cls.setting_name is None else f"{cls.setting_name}s"

  def settings(self) -> tuple[float | None, ...]:
    """The grid, one row per value (ascending); `(None,)` for a method without one."""
    arg = self.grid_arg()
    return (None,) if arg is None else tuple(getattr(self, arg))

  def label(self, setting: float | None) -> str:
    """`wise0.5`: the name and setting, as the row's name has it (`schema.method_label`, the one formula:
    a row is named from its identity alone, by the tables as by the protocol)."""
    return schema.method_label(self.name, setting)

  def describe(self) -> dict[str, Any]:
    """How reporting shows this method's rows, as plain data (`method_info.MethodInfo`)."""
    info = method_info.MethodInfo(
      self.name, self.title or self.name, self.colour, self.setting_name, self.setting_symbol or self.setting_name
    )
    return info._asdict()

  def run(self, ctx: Context, setting: float | None) -> Finetuned | nnx.Module:
    """B's model for one row: `ctx.finetune(...)`'s result, or a bare model evaluated as it is."""
    raise NotImplementedError


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
    arg = built.grid_arg()
    if arg is not None and not isinstance(getattr(built, arg, None), tuple):
      raise TypeError(
        f"method {built.name!r} has setting_name {built.setting_name!r} but no grid {arg!r}; set "
        f"self.{arg} = check_grid(...) in its __init__"
      )
    return built
  if callable(built):
    return FunctionMethod(built, name)
  raise TypeError(f"a finetune.methods entry built {type(built).__name__}; it must build a Method or a function")


def copy_model(model: nnx.Module) -> nnx.Module:
  """A copy with its own buffers: training it (which donates its buffers) leaves `model` intact."""
  graphdef, state = nnx.split(model)
  return nnx.merge(graphdef, jax.tree.map(jnp.copy, state))


def check_grid(values: Sequence[float], what: str, low: float, high: float | None = None) -> tuple[float, ...]:
  """A method's grid as floats, ascending; a `ValueError` naming `what` if it is empty, has a value
  twice, or has one outside [low, high]."""
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
  "Context",
  "Pretraining",
  "Finetuned",
  "FunctionMethod",
  "Method",
  "as_finetuned",
  "as_method",
  "check_grid",
  "copy_model",
]
