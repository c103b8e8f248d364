"""The rows a run executes, grouped by what they share: a pure function of the settings (no JAX, no data).

A run is a sequence of `Pretrained` groups, one per (seed, model, pretrain regime) in that order: the rows
that start from one pretrained model and share its shift metrics before fine-tuning. Each holds one `AtRate`
group per fine-tune learning rate: its plain rows (`last` first, so `head` and `full` start their curves
from its probe), then every other method's rows, which start from those plain rows' fine-tuned models. The
protocol keeps what a group's rows share for exactly as long as the group runs (`Protocol.rows_of`,
`Protocol.rows_at`), so nothing it reuses depends on the order of other groups.

Reads only the planning settings (`PlanSettings`: a `Settings` is one), so tests plan rows from a few
plain values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

from shiftbench.infra.errors import ConfigError
from shiftbench.rows import schema
from shiftbench.rows.schema import RowId


class PlanSettings(Protocol):
  """What row planning reads of `Settings`: methods are read for `name`, `mode`, `needs`, `settings()`
  and `across_rates` (`shiftbench.methods.Method`)."""

  seeds: tuple[int, ...]
  models: Mapping[str, Any]
  pretrain_regimes: tuple[str, ...]
  finetune_modes: tuple[str, ...]
  scratch_modes: tuple[str, ...]
  finetune_rates: tuple[float, ...]
  arms: Mapping[str, tuple[tuple[str, str], ...]]
  methods: Mapping[str, Any]


def pretrained_key(rid: RowId) -> tuple[str, str, int]:
  """The `Pretrained` group of a row: (model, regime, seed)."""
  return rid.model, rid.pretrain, rid.seed


def rate_key(rid: RowId) -> tuple[str, str, float, int]:
  """The `AtRate` group of a row: (model, regime, rate, seed)."""
  return rid.model, rid.pretrain, rid.finetune_lr, rid.seed


@dataclasses.dataclass(frozen=True)
class AtRate:
  """The rows of one pretrained model at one fine-tune rate: `plain` (in mode order, `last` first), then
  `methods` (every other method and setting, after the plain rows they start from). The last rate's group
  also holds the rows, at every rate, of a method that starts from every rate's plain rows (`across_rates`:
  the soup), which can run only once those have."""

  model: str
  regime: str
  seed: int
  rate: float
  plain: tuple[RowId, ...]
  methods: tuple[RowId, ...]

  @property
  def key(self) -> tuple[str, str, float, int]:
    return self.model, self.regime, self.rate, self.seed

  @property
  def rows(self) -> tuple[RowId, ...]:
    return self.plain + self.methods


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """The rows that start from one pretrained model (`scratch`: from none), one `AtRate` group per rate."""

  model: str
  regime: str
  seed: int
  rates: tuple[AtRate, ...]

  @property
  def key(self) -> tuple[str, str, int]:
    return self.model, self.regime, self.seed

  @property
  def rows(self) -> tuple[RowId, ...]:
    return tuple(rid for group in self.rates for rid in group.rows)


def modes_for(s: PlanSettings, regime: str, model: str | None = None) -> tuple[str, ...]:
  """The fine-tune modes run after `regime`: `scratch_modes` for `scratch`, `finetune_modes` otherwise;
  for a model listed in `arms`, only the modes listed there."""
  if model in s.arms:
    return tuple(m for m in schema.FINETUNE_MODES if (regime, m) in s.arms[model])
  return s.scratch_modes if regime == "scratch" else s.finetune_modes


def regimes_for(s: PlanSettings, model: str) -> tuple[str, ...]:
  """The pretrain regimes run for `model` (those of `arms` when it is listed there)."""
  return tuple(r for r in s.pretrain_regimes if modes_for(s, r, model))


def method_rows(s: PlanSettings, model: str, regime: str) -> list[tuple[Any, float | None]]:
  """The (method, setting) rows other than plain run after `regime`: none after `scratch` (nothing
  pretrained to keep), and only where the method's mode runs."""
  if regime == "scratch":
    return []
  modes = modes_for(s, regime, model)
  return [
    (m, setting)
    for name, m in s.methods.items()
    if name != schema.PLAIN and m.mode in modes
    for setting in m.settings()
  ]


def at_rate(s: PlanSettings, model: str, regime: str, seed: int, rate: float) -> AtRate:
  """The rows of one pretrained model at one rate, in the order they run."""
  plain = ()
  if schema.PLAIN in s.methods:
    plain = tuple(RowId.plain(model, regime, mode, rate, seed) for mode in modes_for(s, regime, model))
  others = []
  for method, setting in method_rows(s, model, regime):
    # A method over every rate's plain rows runs its rows (one per rate) in the last rate's group, after
    # them all; its other rows have their own rate's.
    if getattr(method, "across_rates", False):
      rates = s.finetune_rates if rate == max(s.finetune_rates) else ()
    else:
      rates = (rate,)
    for at in rates:
      rid = RowId.plain(model, regime, method.mode, at, seed)
      others.append(rid._replace(finetune_method=method.name, method_setting=setting))
  return AtRate(model, regime, seed, rate, plain, tuple(others))


def groups(s: PlanSettings) -> list[Pretrained]:
  """Every row of the run, grouped, in the order they run: seeds, then models (in config order), then
  regimes (in `pretrain.regimes` order), then rates (ascending). A group with no rows is left out."""
  out = []
  for seed in s.seeds:
    for model in s.models:
      for regime in regimes_for(s, model):
        rates = tuple(at_rate(s, model, regime, seed, lr) for lr in s.finetune_rates)
        rates = tuple(group for group in rates if group.rows)
        if rates:
          out.append(Pretrained(model, regime, seed, rates))
  return out


def rows(s: PlanSettings) -> list[RowId]:
  """Every row of the run, in the order they run."""
  return [rid for group in groups(s) for rid in group.rows]


def check_method_needs(s: PlanSettings) -> None:
  """A method's rows start from plain rows of the same model and regime (`Method.needs`): each of those
  must run wherever the method does, or the run would fail after hours of other rows; a method that keeps
  A (`Method.needs_pretraining`) runs after no ImageNet weights."""
  running = set()
  for model in s.models:
    for regime in regimes_for(s, model):
      modes = modes_for(s, regime, model)
      for method in dict.fromkeys(m for m, _ in method_rows(s, model, regime)):
        running.add(method.name)
        if regime == "imagenet" and getattr(method, "needs_pretraining", False):
          raise ConfigError(
            f"method {method.name!r} keeps what pretraining on A taught, and {model}'s imagenet weights were "
            "not pretrained on A; run it after a regime that pretrains on A (fixed, random_crop, translate)"
          )
        missing = [n for n in method.needs if n not in modes]
        if missing:
          raise ConfigError(
            f"method {method.name!r} starts from the plain {'/'.join(missing)} rows of {model} after {regime} "
            f"pretraining, which do not run (modes there: {', '.join(modes)}); add them to finetune.modes or arms"
          )
  idle = [n for n in s.methods if n != schema.PLAIN and n not in running]
  if idle:
    raise ConfigError(
      f"finetune.methods {idle} have no rows: a method runs at its mode ({s.methods[idle[0]].mode}) after a "
      f"pretrained regime (not scratch); pretrain.regimes is {list(s.pretrain_regimes)}, finetune.modes is "
      f"{list(s.finetune_modes)}"
    )
