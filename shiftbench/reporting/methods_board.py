"""The methods board: which fine-tuning methods keep more accuracy away from the fine-tune location than
plain full fine-tuning, without giving up on learning B.

One table per comparison group, (protocol key, model, pretrain regime, fine-tune rate), for every
non-scratch regime with a method's rows or at least plain `last` and `full`; one line per method and
setting: plain last, head and full, then lpft, wise at each α, l2sp at each β, and a user's methods. Each
line has in-location accuracy `in_acc` and off-location accuracy `off_acc` (the primary endpoint, paired
with in_acc), `off_gain` = per seed off_acc(line) - off_acc(plain full) over the seeds where neither row
collapsed, then, secondary, `invariance` and `retained` = per seed invariance(line) / invariance(plain last
of the same seed) (undefined where plain last's is not above 0), each as the mean and 95% t-interval over
seeds (`verdicts.interval`, the claims' own), and the validation numbers L2-SP's β* is chosen by. off_gain,
a paired difference of rows evaluated on the same objects, is widened by the test set's sampling error
(`objects.paired_error`, as the claims' intervals are) where the rows hold per-object results.

Rank: the lines whose mean in_acc is within `ACCURACY_BAR` of plain full's (`methods_claims.within_bar`)
by mean off_acc, highest first; then the lines below that bar, unranked and marked: a method that keeps
accuracy off the fine-tune location by not learning B is not a win. A line "keeps more" (marked) when it is
within the bar (or above plain full's in_acc: it dominates on both) and its off_gain's lower bound is above
δ (`verdicts.SMALLEST_EFFECT`). The invariance ratio is no rank: at a fixed off_acc it rises whenever in_acc
falls. Without a plain full line there is no bar and no rank. L2-SP's β* (`methods_claims.best_beta`,
chosen on validation with plain full's collapsed seeds left out of its bar, as claim M3 uses it) is marked.

`leaderboard.write_leaderboard` writes `methods.md`, `methods.csv` and `methods.json` when any row is a
method's (`write`), and removes earlier ones otherwise. No jax here.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

from tabulate import tabulate

from shiftbench.claims.arms import Arms, healthy
from shiftbench.claims.methods import ACCURACY_BAR, CHOSEN, L2SP, BestBeta, best_setting, within_bar
from shiftbench.claims.objects import paired_error
from shiftbench.claims.verdicts import SMALLEST_EFFECT, Series, interval
from shiftbench.infra.files import atomic_write_text, to_jsonable
from shiftbench.rows import schema
from shiftbench.rows.method_info import MethodInfo

FILES = ("methods.md", "methods.csv", "methods.json")
BELOW_BAR = "below the accuracy bar"
KEEPS_MORE = f"keeps more off_acc than plain full (> {SMALLEST_EFFECT})"
STATS = ("in_acc", "off_acc", "off_gain", "invariance", "retained", "val_in_acc", "val_invariance")
COLUMNS = ["rank", "method", "seeds", *STATS, "note"]


class Stat(NamedTuple):
  """Mean and 95% t-interval over the seeds with a defined value (`n`); None where there are too few."""

  mean: float | None
  lo: float | None
  hi: float | None
  n: int


def stat(values: list[float], se_obj: float | None = None) -> Stat:
  if not values:
    return Stat(None, None, None, 0)
  mean, lo, hi = interval(values, se_obj=se_obj)
  return Stat(mean, None if math.isnan(lo) else lo, None if math.isnan(hi) else hi, len(values))


@dataclasses.dataclass
class Line:
  """One method and setting of a table."""

  method: str  # `plain last`, `plain full`, `lpft`, `wise0.5`, `l2sp0.01`, a user's method
  finetune: str
  finetune_method: str
  method_setting: float | None
  info: MethodInfo  # how figures show the method (its title, colour, the setting's symbol)
  seeds: list[int]
  in_acc: Stat
  off_acc: Stat
  off_gain: Stat  # off_acc - plain full's, paired by seed (neither collapsed)
  invariance: Stat
  retained: Stat
  val_in_acc: Stat
  val_invariance: Stat
  rank: int | None = None  # None: below the accuracy bar, or no bar
  above_bar: bool | None = None  # None: no bar (no plain full line)
  keeps_more: bool = False  # within the bar and off_gain's lower bound > δ
  best_val: bool = False  # the method's validation-chosen setting (β*, ρ*, λ*)
  notes: list[str] = dataclasses.field(default_factory=list)

  @property
  def plain(self) -> bool:
    return self.finetune_method == schema.PLAIN


@dataclasses.dataclass
class Table:
  """One comparison group's lines, ranked."""

  protocol_key: str
  model: str
  pretrain: str
  finetune_lr: float | None
  lines: list[Line]
  bar: float | None  # the mean in_acc a line needs to be ranked; None without plain full
  best: BestBeta | None  # L2-SP's β*; None without l2sp rows
  group: str = ""  # how the leaderboard names the protocol group (the key and its differing settings)

  @property
  def heading(self) -> str:
    rate = "" if self.finetune_lr is None else f" · lr {schema.format_lr(self.finetune_lr)}"
    return f"{self.model} · {self.pretrain}{rate} · protocol {self.group or self.protocol_key or '-'}"

  def line(self, method: str) -> Line | None:
    return next((x for x in self.lines if x.method == method), None)

  @property
  def summary(self) -> str:
    """The bar and β*, in words."""
    full = self.line("plain full")
    if self.bar is None or full is None:
      parts = ["no plain full line: no accuracy bar, no rank"]
    else:
      parts = [f"accuracy bar: in_acc ≥ {self.bar:.3f} (plain full {full.in_acc.mean:.3f} - {ACCURACY_BAR})"]
    if self.best is not None:
      beta = "none" if self.best.beta is None else schema.format_lr(self.best.beta)
      note = f": {self.best.note}" if self.best.note else ""
      parts.append(f"L2-SP under Adam β* = {beta} (chosen on validation{note})")
    return "; ".join(parts)


def has_methods(rows: list[dict[str, Any]]) -> bool:
  """Whether any row is a method's (then the board is written)."""
  return any(not schema.is_plain(r) for r in rows)


def tables(rows: list[dict[str, Any]], labels: dict[str, str] | None = None) -> list[Table]:
  """Every comparison group's table (none when no row is a method's); `labels` names each protocol group
  (`leaderboard.group_labels`)."""
  if not has_methods(rows):
    return []
  by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
  for r in rows:
    by_group[r.get("protocol_key", "")].append(r)
  out = []
  for key, members in by_group.items():
    arms = Arms(members)
    for model, pretrain, lr in _cells(members):
      plain_pair = arms.found(model, pretrain, "last", lr) and arms.found(model, pretrain, "full", lr)
      if arms.methods_at(model, pretrain, lr) or plain_pair:
        table = _table(arms, model, pretrain, lr)
        table.protocol_key, table.group = key, (labels or {}).get(key, "")
        out.append(table)
  return out


def _cells(members: list[dict[str, Any]]) -> list[tuple[str, str, float | None]]:
  """(model, pretrain, rate) of every non-scratch row, in the rows' order (`schema.sort_key`)."""
  order = schema.sort_key({m: i for i, m in enumerate(dict.fromkeys(r["model"] for r in members))})
  cells = {(r["model"], r["pretrain"], r.get(schema.LR)) for r in members if r["pretrain"] != "scratch"}
  return sorted(cells, key=lambda c: order({"model": c[0], "pretrain": c[1], schema.LR: c[2]}))


def _values(series: Series | None) -> list[float]:
  return [v for v in (series or {}).values() if v is not None]


def _line(arms: Arms, model: str, pretrain: str, lr, finetune: str, method: str, setting: float | None) -> Line:
  if method == schema.PLAIN:
    at = lambda metric: arms.values(model, pretrain, finetune, lr, metric)  # noqa: E731
  else:
    at = lambda metric: arms.method_values(model, pretrain, method, setting, lr, metric)  # noqa: E731
  inv, last = at("invariance"), arms.values(model, pretrain, "last", lr)
  full = healthy(arms.values(model, pretrain, "full", lr, "off_acc"), arms.values(model, pretrain, "full", lr))
  mine = healthy(at("off_acc"), inv)
  paired = [s for s, v in (mine or {}).items() if v is not None and (full or {}).get(s) is not None]
  gain = [mine[s] - full[s] for s in paired]
  retained = [
    v / last[s] for s, v in (inv or {}).items() if v is not None and last and (last.get(s) or 0) > 0
  ]  # plain last's invariance not above 0: a ratio to it means nothing
  info = MethodInfo(method, method) if method == schema.PLAIN else arms.method_info(method)
  return Line(
    method=f"plain {finetune}" if method == schema.PLAIN else info.label(setting),
    finetune=finetune,
    finetune_method=method,
    method_setting=setting,
    info=info,
    seeds=sorted(at("in_acc") or {}),
    in_acc=stat(_values(at("in_acc"))),
    off_acc=stat(_values(at("off_acc"))),
    off_gain=stat(gain, paired_error(mine, full, paired).se),
    invariance=stat(_values(inv)),
    retained=stat(retained),
    val_in_acc=stat(_values(at("val_in_acc"))),
    val_invariance=stat(_values(at("val_invariance"))),
  )


def _table(arms: Arms, model: str, pretrain: str, lr: float | None) -> Table:
  lines = [
    _line(arms, model, pretrain, lr, mode, schema.PLAIN, None)
    for mode in schema.FINETUNE_MODES
    if arms.found(model, pretrain, mode, lr)
  ]
  methods = arms.methods_at(model, pretrain, lr)
  lines += [_line(arms, model, pretrain, lr, "full", m.method, m.setting) for m in methods]
  chosen = {m.method: best_setting(arms, model, pretrain, lr, m.method) for m in methods if m.method in CHOSEN}
  best = chosen.get(L2SP)
  for x in lines:
    pick = chosen.get(x.finetune_method)
    if pick is not None and pick.beta is not None and x.method_setting == pick.beta:
      x.best_val, symbol = True, CHOSEN[x.finetune_method]
      x.notes.append(f"{symbol}: best val" if pick.qualified else f"{symbol}: highest val_in_acc (none within the bar)")
  full = next((x.in_acc.mean for x in lines if x.method == "plain full"), None)
  bar = None if full is None else full - ACCURACY_BAR
  return Table("", model, pretrain, lr, rank(lines, full), bar, best)


def rank(lines: list[Line], plain_full: float | None) -> list[Line]:
  """The lines whose mean in_acc is within the bar of `plain_full` (plain full's mean in_acc) by mean
  off_acc (highest first; undefined last), numbered, those whose off_gain clears δ marked; then the lines
  below the bar, in the same order, unranked. Without plain full: as given, unranked."""
  if plain_full is None:
    return lines
  by_off = lambda x: (x.off_acc.mean is None, -(x.off_acc.mean or 0.0))  # noqa: E731
  above, below = [], []
  for x in lines:
    (above if x.in_acc.mean is not None and within_bar(x.in_acc.mean, plain_full) else below).append(x)
  above, below = sorted(above, key=by_off), sorted(below, key=by_off)
  for i, x in enumerate(above, 1):
    x.rank, x.above_bar = i, True
    x.keeps_more = x.off_gain.lo is not None and x.off_gain.lo > SMALLEST_EFFECT
    if x.keeps_more:
      x.notes.insert(0, KEEPS_MORE)
  for x in below:
    x.rank, x.above_bar = None, False
    x.notes.insert(0, BELOW_BAR)
  return above + below


def fmt(s: Stat, seeds: int | None = None) -> str:
  """`0.812 [0.790, 0.834]`; a mean alone below 2 values; `-` with none; `(n=2)` when fewer than `seeds`."""
  if s.mean is None:
    return "-"
  text = f"{s.mean:.3f}" + ("" if s.lo is None else f" [{s.lo:.3f}, {s.hi:.3f}]")
  return f"{text} (n={s.n})" if seeds is not None and s.n < seeds else text


def rows(table: Table) -> list[list[Any]]:
  """One list of cells per line (`COLUMNS`), as methods.md and index.html show them."""
  return [
    [
      "-" if x.rank is None else x.rank,
      x.method + (f" {CHOSEN.get(x.finetune_method, '*')}" if x.best_val else ""),
      len(x.seeds),
      *(fmt(getattr(x, k), len(x.seeds)) for k in STATS),
      "; ".join(x.notes),
    ]
    for x in table.lines
  ]


def markdown(found: list[Table]) -> str:
  """methods.md: what the tables are, then one table per group under its heading."""
  intro = (
    "# Fine-tuning methods that keep invariance\n\n"
    "Mean [95% t-interval] over seeds. Ranked by off-location accuracy (`off_acc`, the primary endpoint) among "
    f"the lines whose mean in_acc is within {ACCURACY_BAR} of plain full's; lines below that bar are unranked "
    "(`-`). `off_gain` = off_acc - plain full's, paired by seed, its interval widened by the test set's "
    "sampling error (a bootstrap over objects, as in the claims) where rows hold per-object results; a ranked "
    "line whose off_gain's lower bound is "
    f"above δ = {SMALLEST_EFFECT} keeps more. `invariance` and `retained` (invariance / plain last's, per seed) "
    "are secondary: the ratio rises whenever in_acc falls. β*, ρ*, λ*: the setting of L2-SP, replay and EWC "
    "chosen on B's validation split by validation off_acc within the bar (claims M3-M5). Columns: docs/metrics.md."
  )
  parts = [
    f"## {t.heading}\n\n{t.summary}\n\n{tabulate(rows(t), headers=COLUMNS, tablefmt='github', disable_numparse=True)}"
    for t in found
  ]
  return "\n\n".join([intro, *parts]) + "\n"


CSV_COLUMNS = [
  "protocol_key",
  "model",
  "pretrain",
  schema.LR,
  "rank",
  "method",
  "finetune",
  schema.METHOD,
  schema.SETTING,
  "setting_name",
  "best_val",
  "above_bar",
  "keeps_more",
  "accuracy_bar",
  "n_seeds",
  *(f"{k}_{part}" for k in STATS for part in ("mean", "lo", "hi", "n")),
]


def to_csv(found: list[Table]) -> str:
  """methods.csv: one line per table line (`CSV_COLUMNS`); empty cells where a value is undefined."""
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(CSV_COLUMNS)
  for t in found:
    for x in t.lines:
      values = [t.protocol_key, t.model, t.pretrain, t.finetune_lr, x.rank, x.method, x.finetune, x.finetune_method]
      values += [x.method_setting, x.info.setting_name, x.best_val, x.above_bar, x.keeps_more, t.bar, len(x.seeds)]
      values += [v for k in STATS for v in getattr(x, k)]
      writer.writerow(["" if v is None else v for v in values])
  return buf.getvalue()


def to_json(found: list[Table]) -> list[dict[str, Any]]:
  """methods.json: one entry per table, its lines ranked, each statistic as {mean, ci95, n}."""
  out = []
  for t in found:
    best = t.best or BestBeta(None)
    lines = [
      {
        "rank": x.rank,
        "method": x.method,
        "finetune": x.finetune,
        schema.METHOD: x.finetune_method,
        schema.SETTING: x.method_setting,
        "setting_name": x.info.setting_name,
        "seeds": x.seeds,
        "above_bar": x.above_bar,
        "keeps_more": x.keeps_more,
        "best_val": x.best_val,
        **{k: {"mean": s.mean, "ci95": [s.lo, s.hi], "n": s.n} for k in STATS for s in [getattr(x, k)]},
        "note": "; ".join(x.notes) or None,
      }
      for x in t.lines
    ]
    out.append(
      {
        "protocol_key": t.protocol_key,
        "model": t.model,
        "pretrain": t.pretrain,
        schema.LR: t.finetune_lr,
        "accuracy_bar": t.bar,
        "l2sp_best_beta": best.beta,
        "l2sp_best_beta_note": best.note or None,
        "lines": lines,
      }
    )
  return out


def write(found: list[Table], out_dir: str | os.PathLike) -> list[Path]:
  """Writes methods.md, .csv and .json into `out_dir` (each atomically); with no tables, removes any an
  earlier board left there (they would contradict this one) and writes nothing."""
  out_dir = Path(out_dir)
  if not found:
    for name in FILES:
      (out_dir / name).unlink(missing_ok=True)
    return []
  text = json.dumps(to_jsonable(to_json(found)), indent=1, allow_nan=False) + "\n"
  return [
    atomic_write_text(out_dir / "methods.md", markdown(found)),
    atomic_write_text(out_dir / "methods.csv", to_csv(found)),
    atomic_write_text(out_dir / "methods.json", text),
  ]
