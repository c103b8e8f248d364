"""The rows of one comparable group as the claims see them: by arm (`Arm`: model, pretrain, finetune,
lr) -> {seed: value}; which models are related how (FC head, architecture twins); and the rate at which
the scratch arm is judged, chosen on validation (`Arms.best_rate`, the rule in `shiftbench.claims.catalogue`).

The arms are plain rows only: the literature's claims (C1-C8, F1) are about plain fine-tuning, and a
method's row (LP-FT, WiSE-FT, L2-SP, a user's) is at `full` too, so it would stand in for plain full. The
methods' rows are looked up apart, by `MethodArm` (model, pretrain, method, setting, lr)
(`Arms.method_values`), for the methods board and claims M1-M3. No jax here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from shiftbench.claims.objects import Measured, Replicates
from shiftbench.claims.verdicts import Series
from shiftbench.rows import method_info, schema

SCRATCH = ("scratch", "full")
Guard = Callable[[dict[str, Any]], bool]  # whether a row's value means anything (else the seed collapsed)


class Arm(NamedTuple):
  """A plain arm: the rows of one model, pretrain regime, fine-tune mode and rate (one per seed)."""

  model: str
  pretrain: str
  finetune: str
  lr: float | None

  @classmethod
  def of(cls, row: dict[str, Any]) -> Arm:
    return cls(row["model"], row["pretrain"], row["finetune"], row.get(schema.LR))


class Cell(NamedTuple):
  """A model, pretrain regime and rate: where the methods' rows are compared with plain rows."""

  model: str
  pretrain: str
  lr: float | None


class MethodArm(NamedTuple):
  """A method's rows of one model, pretrain regime, setting and rate (one per seed)."""

  model: str
  pretrain: str
  method: str
  setting: float | None  # the row's `method_setting`
  lr: float | None

  @classmethod
  def of(cls, row: dict[str, Any]) -> MethodArm:
    setting = schema.dimension(row, schema.SETTING)
    return cls(row["model"], row["pretrain"], schema.dimension(row, schema.METHOD), setting, row.get(schema.LR))

  @property
  def cell(self) -> Cell:
    return Cell(self.model, self.pretrain, self.lr)


class Setting(NamedTuple):
  """A method and one value of its grid (None for a method without one)."""

  method: str
  setting: float | None


class Best(NamedTuple):
  """The scratch arm's rate η*; `note` says why none could be chosen (then `rate` means nothing)."""

  rate: float | None
  note: str = ""


def label(pretrain: str, finetune: str, lr: float | None) -> str:
  """`translate/last@0.01` (rows without a rate: `translate/last`)."""
  return f"{pretrain}/{finetune}" + ("" if lr is None else f"@{schema.format_lr(lr)}")


def scratch_label(best: Best) -> str:
  """`scratch/full@0.001 (best val)`: the scratch arm at its best validation rate."""
  if best.note:
    return "scratch/full@best val"
  return label(*SCRATCH, best.rate) + ("" if best.rate is None else " (best val)")


def _rate_order(lr: float | None) -> tuple[bool, float]:
  return (lr is not None, lr or 0.0)


def _method_order(method: str) -> tuple[int, str]:
  known = schema.FINETUNE_METHODS
  return (known.index(method), "") if method in known else (len(known), method)


def _number(value: Any) -> float | None:
  return float(value) if schema.defined(value) else None


def is_target(arch: dict[str, Any], target: str, **want: Any) -> bool:
  """The model config's `_target_` ends in `target`, and its keys in `want` (where present) match."""
  return str(arch.get("_target_", "")).endswith(target) and all(arch.get(k, v) == v for k, v in want.items())


def fc_head(arch: dict[str, Any]) -> bool:
  """A network whose hidden FC layers carry the invariance (Biscione & Bowers): shiftbench's `head: fc`
  models, and torchvision's VGGs (fc6/fc7). DenseNet and ResNet pool globally."""
  return arch.get("head") == "fc" or (is_target(arch, "VGG") and "depth" in arch and "batch_norm" in arch)


class Arms:
  """Rows of one comparable group (one protocol key), looked up by arm."""

  def __init__(self, rows: list[dict[str, Any]]):
    self.rows = [r for r in rows if schema.is_plain(r)]  # what the literature's claims see
    self.method_rows = [r for r in rows if not schema.is_plain(r)]
    self.replicates = Replicates(self.rows + self.method_rows)  # the test objects resampled, for every row
    self.arch = {r["model"]: r.get("architecture") or {} for r in self.method_rows + self.rows}
    self.models = list(dict.fromkeys(r["model"] for r in self.rows))
    self._arms: dict[Arm, list[dict[str, Any]]] = defaultdict(list)
    for r in self.rows:
      self._arms[Arm.of(r)].append(r)
    self._methods: dict[MethodArm, list[dict[str, Any]]] = defaultdict(list)
    for r in self.method_rows:
      self._methods[MethodArm.of(r)].append(r)
    self._info: dict[str, method_info.MethodInfo] = {}
    for r in sorted(self.method_rows, key=lambda r: schema.METHOD_INFO not in r):  # a described row first
      self._info.setdefault(schema.dimension(r, schema.METHOD), method_info.of(r))

  def rates(self, model: str, *arms: tuple[str, str]) -> list[float | None]:
    """The fine-tune rates at which any of `arms` ((pretrain, finetune) pairs) ran, smallest first."""
    found = {a.lr for a in self._arms if a.model == model and (a.pretrain, a.finetune) in arms}
    return sorted(found, key=_rate_order)

  def found(self, model: str, pretrain: str, finetune: str, lr: float | None) -> list[dict[str, Any]]:
    return self._arms.get(Arm(model, pretrain, finetune, lr), [])

  def values(
    self,
    model: str,
    pretrain: str,
    finetune: str,
    lr: float | None,
    metric: str = "invariance",
    guard: Guard | None = None,
  ) -> Series | None:
    """Every seed's value (None where undefined, or where `guard` rejects the row); None when the arm
    did not run at all."""
    found = self.found(model, pretrain, finetune, lr)
    return _series(found, f"{label(pretrain, finetune, lr)} of {model}", metric, self.replicates, guard)

  def best_rate(self, model: str) -> Best:
    """η*: the rate of the model's scratch/full rows with the highest mean `val_in_acc` over seeds (ties:
    the smaller rate); the only rate if one ran; no rate (with a note) if several ran and none has a
    validation accuracy. Never chosen on test numbers."""
    rates = self.rates(model, SCRATCH)
    if len(rates) <= 1:
      return Best(rates[0] if rates else None)
    means = {}
    for lr in rates:
      val = [v for v in (_number(r.get("val_in_acc")) for r in self.found(model, *SCRATCH, lr)) if v is not None]
      if val:
        means[lr] = math.fsum(val) / len(val)
    if not means:
      return Best(None, f"{model}: no val_in_acc to choose scratch's rate among {len(rates)}")
    return Best(max(means, key=lambda lr: (means[lr], -_rate_order(lr)[1])))

  def scratch(self, model: str, metric: str = "invariance", guard: Guard | None = None) -> tuple[Series | None, Best]:
    """The scratch arm at η* (None when it did not run or no rate could be chosen), and η*."""
    best = self.best_rate(model)
    return (None if best.note else self.values(model, *SCRATCH, best.rate, metric, guard)), best

  def has_metric(self, model: str, pretrain: str, finetune: str, lr: float | None, metric: str) -> bool:
    return any(metric in r for r in self.found(model, pretrain, finetune, lr))

  def with_arch(self, **want: Any) -> list[str]:
    return [m for m in self.models if all(self.arch[m].get(k) == v for k, v in want.items())]

  def where(self, test: Callable[[dict[str, Any]], bool]) -> list[str]:
    return [m for m in self.models if test(self.arch[m])]

  def twins(self, model: str, differing: Iterable[str]) -> list[str]:
    """Other models with the same architecture except for the keys in `differing`."""
    differing = set(differing)
    same = lambda a: {k: v for k, v in a.items() if k not in differing}  # noqa: E731
    return [
      m
      for m in self.models
      if m != model
      and same(self.arch[m]) == same(self.arch[model])
      and self.arch[m].get("_target_") == self.arch[model].get("_target_")
    ]

  def method_info(self, method: str) -> method_info.MethodInfo:
    """How `method`'s rows are shown (from a row that carries its description, else by its name alone)."""
    return self._info.get(method) or method_info.MethodInfo(method, method)

  def method_cells(self) -> list[Cell]:
    """Where every method's rows are (model, pretrain, rate), in the order they came."""
    return list(dict.fromkeys(a.cell for a in self._methods))

  def methods_at(self, model: str, pretrain: str, lr: float | None) -> list[Setting]:
    """The (method, setting)s of the method rows of `model` from `pretrain` at `lr`: the built-in methods
    in `schema.FINETUNE_METHODS` order, then a user's by name; settings ascending."""
    found = {Setting(a.method, a.setting) for a in self._methods if a.cell == Cell(model, pretrain, lr)}
    return sorted(found, key=lambda s: (*_method_order(s.method), _rate_order(s.setting)))

  def method_rates(self, model: str, pretrain: str, method: str) -> list[float | None]:
    """The fine-tune rates at which `method`'s rows of `model` from `pretrain` ran, smallest first."""
    found = {a.lr for a in self._methods if (a.model, a.pretrain, a.method) == (model, pretrain, method)}
    return sorted(found, key=_rate_order)

  def method_values(
    self,
    model: str,
    pretrain: str,
    method: str,
    setting: float | None,
    lr: float | None,
    metric: str = "invariance",
  ) -> Series | None:
    """Like `values`, for the rows of `method` at `setting` (WiSE-FT's alpha, L2-SP's beta, or None)."""
    found = self._methods.get(MethodArm(model, pretrain, method, setting, lr), [])
    return _series(found, f"{method_arm(pretrain, method, setting, lr)} of {model}", metric, self.replicates)


def healthy(values: Series | None, health: Series | None) -> Series | None:
  """`values` with None where the same row collapsed (`health`, its invariance, undefined: in-location
  accuracy not above chance), so that a sample counts that seed as collapsed, against the claim: an
  accuracy read off a fine-tune that learned nothing says nothing about what it kept."""
  if values is None:
    return None
  kept = {s: (v if (health or {}).get(s) is not None else None) for s, v in values.items()}
  return values.like(kept) if isinstance(values, Measured) else kept


def method_arm(pretrain: str, method: str, setting: float | None, lr: float | None, note: str = "") -> str:
  """`translate/full wise0.5@0.01` (with `note`: `translate/full l2sp0.01 (best val)@0.01`)."""
  text = f"{pretrain}/full {schema.method_label(method, setting)}" + (f" {note}" if note else "")
  return text + ("" if lr is None else f"@{schema.format_lr(lr)}")


def _series(
  found: list[dict[str, Any]], what: str, metric: str, replicates: Replicates, guard: Guard | None = None
) -> Series | None:
  """Every seed's value of `metric` among `found` (None where undefined or `guard` rejects the row), with
  the rows it was read from (`Measured`: a paired difference's test-set error is read off them); None when
  there are no rows."""
  if not found:
    return None
  out: Series = {}
  for r in found:
    if r["seed"] in out:  # collect() merges true duplicates; two different rows are a caller's bug
      raise ValueError(f"two rows for {what}, seed {r['seed']}, in one group")
    ok = guard is None or guard(r)
    out[r["seed"]] = _number(r.get(metric)) if ok else None
  return Measured(out, metric, {r["seed"]: r for r in found}, replicates)
