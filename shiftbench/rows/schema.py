"""The row schema: what a results row is, said once.

A row is one fine-tuned model evaluated: `RowId` names it within a run (model x pretrain regime x
fine-tune mode x fine-tune method and its setting x fine-tune learning rate x seed), and its
`comparison_key` (`shiftbench.rows.comparison`) names the experiment it belongs to, so
`(comparison_key, *RowId)` names it across runs. Everything that reads rows (the leaderboard, the tidy
table, wandb, resuming a run, the claims) takes its identity, its order and which of its fields are
metrics from here: `ROW` declares every field of a row once (the dimensions here, as `RowId` and a line on
each in `DIMENSION_DOCS`; every other field in `shiftbench.rows.fields`), and the classifications below
derive from it. To add a row dimension, add a field to `RowId` and its line (and its value for older
results files to the defaults, `METHOD_DEFAULTS`) and have the planner fill it (docs/development.md).

No jax here: the table tools import this module and must start without it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from shiftbench.rows import comparison, fields

# The allowed values of each dimension, in the order rows are shown: regimes from least to most
# augmentation, modes from least to most trained. Models keep the order they were run in.
PLACEMENT_REGIMES: tuple[str, ...] = ("fixed", "random_crop", "translate")
# `imagenet` starts from torchvision's ImageNet weights instead of pretraining on A.
PRETRAIN_REGIMES: tuple[str, ...] = ("scratch", "imagenet", *PLACEMENT_REGIMES)
# Named for what trains: the classifier only, hidden FC layers + classifier (conv frozen), everything.
FINETUNE_MODES: tuple[str, ...] = ("last", "head", "full")
# How a row was fine-tuned (`shiftbench.methods`): `plain` at any mode, or a method that keeps invariance,
# at `full`, and the method's setting (a value of its grid, or None). Tables show the built-in methods in
# this order; a user's own methods after them, by name (a method missing here is only shown later).
PLAIN = "plain"
METHOD, SETTING = "finetune_method", "method_setting"
FINETUNE_METHODS: tuple[str, ...] = (PLAIN, "lpft", "wise", "l2sp", "replay", "ewc", "surgical", "soup")
# A row of an older results file, without the method fields, is a plain row.
METHOD_DEFAULTS: dict[str, Any] = {METHOD: PLAIN, SETTING: None}
# 0.6.0 kept each gridded method's setting in a field of its own (WiSE-FT's alpha, L2-SP's beta): a row
# holds at most one, which is its `method_setting` (`dimension`).
LEGACY_SETTINGS: tuple[str, ...] = ("wise_alpha", "l2sp_beta")


class RowId(NamedTuple):
  """A row of one run. The fields are the row's dimensions, in the order tables show them."""

  model: str
  pretrain: str
  finetune: str
  finetune_method: str  # `plain`, or a method that keeps invariance (`shiftbench.methods`)
  method_setting: float | None  # the value of the method's grid (WiSE-FT's alpha, L2-SP's beta); None without
  finetune_lr: float  # the fine-tune learning rate: the forgetting result is a curve over it
  seed: int

  @classmethod
  def of(cls, row: Mapping[str, Any]) -> RowId:
    return cls(*(dimension(row, k) if k in METHOD_DEFAULTS else row[k] for k in cls._fields))

  @classmethod
  def plain(cls, model: str, pretrain: str, finetune: str, finetune_lr: float, seed: int) -> RowId:
    """A plain fine-tune's row."""
    return cls(model, pretrain, finetune, PLAIN, None, finetune_lr, seed)

  @property
  def method_label(self) -> str:
    """`plain`, `lpft`, `wise0.5`, `l2sp0.01`: the method and its setting."""
    return method_label(self.finetune_method, self.method_setting)

  def name(self, sep: str = "/") -> str:
    """`cnn_fc/translate/full/lr0.001/s0` (a plain row), `cnn_fc/translate/full/wise0.5/lr0.001/s0`: how log
    lines, wandb runs and heatmap files name the row."""
    method = [] if self.finetune_method == PLAIN else [self.method_label]
    return sep.join(
      [self.model, self.pretrain, self.finetune, *method, f"lr{format_lr(self.finetune_lr)}", f"s{self.seed}"]
    )

  def plain_sibling(self, finetune: str) -> RowId:
    """The plain row of the same model, regime, rate and seed at `finetune` (what a method starts from or
    is compared with)."""
    return self._replace(finetune=finetune, **METHOD_DEFAULTS)

  def sibling(self, **changes: Any) -> RowId:
    """The row of the same run that differs in the given dimensions (e.g. `finetune="last"`)."""
    return self._replace(**changes)


def format_lr(lr: float) -> str:
  """A learning rate as tables and file names show it: `0.001`, `0.0003`, `1e-05`."""
  return f"{lr:g}"


def method_label(method: str, setting: float | None) -> str:
  """`plain`, `lpft`, `wise0.5`, `l2sp0.01`: a method and its setting, as row names, tables and claims
  write them (one formula, so a row's name follows from its identity alone)."""
  return method + ("" if setting is None else format_lr(setting))


def dimension(row: Mapping[str, Any], name: str, missing: Any = None) -> Any:
  """A row's value of the identity field `name` as today's rows hold it: a row of an older file without
  the method fields is a plain row, and 0.6.0's `wise_alpha` or `l2sp_beta` is its `method_setting`.
  `missing` for another field the row lacks."""
  if name in row:
    return row[name]
  if name == SETTING:
    return next((row[k] for k in LEGACY_SETTINGS if row.get(k) is not None), None)
  return METHOD_DEFAULTS.get(name, missing)


# One line on each dimension (docs/outputs.md's table of row fields) and the terminal's shorter header where
# it has one: with `RowId`'s fields, the identity part of the row's declaration (`ROW`).
DIMENSION_DOCS: dict[str, str] = {
  "model": "the model preset (a key of `model`)",
  "pretrain": "the pretrain regime on A: `scratch`, `imagenet`, `fixed`, `random_crop` or `translate`",
  "finetune": "the fine-tune mode, what trains on B: `last` (the classifier), `head` (hidden FC layers too), `full`",
  "finetune_method": (
    "how it was fine-tuned: `plain`, `lpft`, `wise`, `l2sp`, `replay`, `ewc`, `surgical`, `soup` or a user's "
    "method (absent: plain)"
  ),
  "method_setting": (
    "the method's grid value (WiSE-FT's α, L2-SP's β, replay's ρ, EWC's λ; 0.6.0's `wise_alpha`, `l2sp_beta`), or null"
  ),
  "finetune_lr": "the fine-tune learning rate (`finetune.learning_rates`)",
  "seed": "the seed of every random stream of the row",
}
DIMENSION_HEADERS: dict[str, str] = {"finetune": "mode", "finetune_lr": "lr"}
# What a results row is: its dimensions, then every other field (`fields.RESULTS`), each declared once.
ROW = fields.Row(
  (
    *(
      fields.Field(n, fields.IDENTITY, DIMENSION_DOCS.get(n, ""), header=DIMENSION_HEADERS.get(n))
      for n in RowId._fields
    ),
    *fields.RESULTS,
  ),
  fields.MEMBERS,
)

IDENTITY: tuple[str, ...] = RowId._fields
LR = "finetune_lr"
SEED = "seed"
# What a leaderboard line averages over seeds: every dimension but the seed, within one experiment.
DIMENSIONS: tuple[str, ...] = tuple(k for k in IDENTITY if k != SEED)
KEYS: tuple[str, ...] = ROW.names(fields.KEY)
GROUP: tuple[str, ...] = (*DIMENSIONS, "comparison_key")
UNIQUE: tuple[str, ...] = ("comparison_key", *IDENTITY)  # one row across runs
# Attached to each row when a results file is read (`collect.annotate`), not stored in it; `method_info`
# is how its method is shown (`shiftbench.rows.method_info`).
METHOD_INFO = "method_info"
ANNOTATIONS: tuple[str, ...] = ROW.names(fields.ANNOTATION)
# Where and how fast a row ran: two copies of one row may differ in these, never in anything else.
PROVENANCE: tuple[str, ...] = ROW.names(fields.PROVENANCE, fields.TIMING, fields.ANNOTATION)
# Fields that are never metric columns, numbers among them too (identity, settings, timing, arrays); every
# other number of a row is one, a family's included.
NOT_METRICS: tuple[str, ...] = (
  *(n for n in ROW.names() if ROW.field(n).column != fields.NUMBERS),
  *LEGACY_SETTINGS,  # 0.6.0's method settings, read as `method_setting`
)
# The numbers the leaderboard averages over seeds, and their column headers.
METRICS: dict[str, str] = {name: ROW.header(name) for name in fields.BOARD}
# What the fine-tune curve records at each evaluation: its metrics (wandb's history), and every field.
CURVE_FIELDS: tuple[str, ...] = tuple(n for n in ROW.names() if ROW.field(n).curve)
CURVE_METRICS: tuple[str, ...] = tuple(n for n in CURVE_FIELDS if ROW.field(n).kind == fields.METRIC)
_ORDERS = {"pretrain": PRETRAIN_REGIMES, "finetune": FINETUNE_MODES, METHOD: FINETUNE_METHODS}


def identity(row: Mapping[str, Any]) -> RowId:
  return RowId.of(row)


def is_plain(row: Mapping[str, Any]) -> bool:
  """A plain fine-tune's row (every row of a results file from before methods existed)."""
  return row.get(METHOD, PLAIN) == PLAIN


def unique(row: Mapping[str, Any]) -> tuple:
  """(comparison key, *identity): the same row in any run."""
  return tuple(dimension(row, k) for k in UNIQUE)


def group(row: Mapping[str, Any]) -> tuple:
  """(*dimensions, comparison key): the rows a leaderboard line averages over seeds."""
  return tuple(dimension(row, k, "") for k in GROUP)


def missing_identity(row: Mapping[str, Any]) -> list[str]:
  return [k for k in IDENTITY if k not in row and k not in METHOD_DEFAULTS]


def sort_key(model_order: Mapping[str, int]):
  """A key that orders rows (or leaderboard entries, which carry the same dimension fields) like the
  protocol: models in `model_order`, then every other dimension in its declared order."""

  def key(entry: Mapping[str, Any]) -> tuple:
    out: list[Any] = []
    for name in DIMENSIONS:
      value = dimension(entry, name)
      if name == "model":
        out.append(model_order.get(value, len(model_order)))
      elif name in _ORDERS:  # declared values in order, then others by name
        out.append((_ORDERS[name].index(value), "") if value in _ORDERS[name] else (99, str(value)))
      else:  # a number, or None (no setting) first
        out.append((value is not None, value or 0))
    return tuple(out)

  return key


def defined(value: Any) -> bool:
  """A finite number (an undefined metric is None, or NaN before it is written)."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def scalar_metrics(row: Mapping[str, Any]) -> dict[str, float]:
  """Every number of a row that is a metric, under its results key; dicts of numbers (per-layer
  similarity) flattened with `/`."""
  out: dict[str, float] = {}
  for name, value in row.items():
    if name in NOT_METRICS or isinstance(value, bool):
      continue
    if isinstance(value, (int, float)):
      out[name] = value
    elif isinstance(value, dict) and value and all(isinstance(v, (int, float)) for v in value.values()):
      out.update({f"{name}/{k}": v for k, v in value.items()})
  return out


def fill_invariance_lost(rows: Iterable[dict[str, Any]]) -> None:
  """`invariance_lost` = each row's own loss against its `last` row: invariance after plain `last` minus
  the row's own, for the same experiment, model, pretrain regime, rate and seed (a `head` row: what training
  the hidden FC layers lost; a `full` row, plain or a method's: the forgetting result). A plain `last` row
  is the reference and has none (null), nor has a row whose own invariance is undefined, or whose `last`
  row's is; a row whose `last` row is not among `rows` (run apart, collected alone) keeps what it has."""
  rows = list(rows)
  by_id = {(r.get("comparison_key"), identity(r)): r for r in rows}
  for r in rows:
    rid = identity(r)
    if rid == rid.plain_sibling("last"):
      r["invariance_lost"] = None  # the reference itself: a loss against itself means nothing
      continue
    last = by_id.get((_plain_key(r), rid.plain_sibling("last")))
    if last is None:
      continue
    if defined(last["invariance"]) and defined(r.get("invariance")):
      r["invariance_lost"] = last["invariance"] - r["invariance"]
    else:
      r["invariance_lost"] = None


def _plain_key(row: Mapping[str, Any]) -> str | None:
  """The comparison key a plain row of the same experiment and model has: the row's own without its
  method's settings (`method.*`, which only a method's row has)."""
  settings = row.get("comparison")
  if not isinstance(settings, Mapping) or not any(k.startswith(comparison.METHOD) for k in settings):
    return row.get("comparison_key")
  return comparison.key_of(comparison.without_method(settings))


def by_group(rows: Iterable[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
  out: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
  for r in rows:
    out[group(r)].append(r)
  return out
