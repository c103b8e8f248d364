"""Where fine-tuning stopped, for the rows that ran under the stopping rule (`finetune.until_accuracy`).

Per protocol group and arm (model, pretrain regime, fine-tune mode, method and its setting, fine-tune rate):
how many rows the rule ended, the median and range of the steps it ended them at, and how many ran to the
cap (`finetune.steps`) without it firing. A row at the cap was trained for a fixed budget after all, so a
table "at the stopping rule" means what it says only where the rule fired; this keeps the two apart.

Read from each row's `finetune_stop` (`shiftbench.runs.protocol`): `{rule: until_accuracy, step, threshold,
window, ...}` where the rule fired, `{rule: steps, step, cap_of: {rule: until_accuracy, ...}}` where the cap
came first. Rows at a fixed budget (`{rule: steps, step}`) and a method's own records (an interpolation, a
soup) have no line; a group without any row under the rule has no table.

The terminal, leaderboard.md, index.html and stopping.json show the same lines (`cells`); `write` writes
stopping.json. No jax here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tabulate import tabulate

from shiftbench.infra.files import atomic_write_text, to_jsonable
from shiftbench.rows import schema

FILE = "stopping.json"
RULE = "until_accuracy"  # `finetune_stop.rule` where the stopping rule ended the row
CAP = "steps"  # ... where the budget did; under the rule, with the rule's record as `cap_of`
TITLE = "Where fine-tuning stopped"
COLUMNS = [
  "model",
  "pretrain",
  "mode",
  "method",
  "lr",
  "rows",
  "fired",  # rows the rule ended
  "stop median",
  "stop range",
  "at cap",  # rows that ran to the cap
]
INTRO = (
  "Rows fine-tuned under the stopping rule, per arm: how many the rule ended (fired; the median and range "
  "of the step it ended them at) and how many ran to the cap without it firing (at cap: a fixed budget "
  "after all)."
)


def stop_of(row: Mapping[str, Any]) -> tuple[dict[str, Any], int | None] | None:
  """(the rule's record, the step it fired at, or None where the row ran to the cap) of a row fine-tuned
  under the stopping rule; None for any other row."""
  stop = row.get("finetune_stop") or {}
  if stop.get("rule") == RULE:
    return stop, int(stop["step"])
  capped = stop.get("cap_of") or {}
  if stop.get("rule") == CAP and capped.get("rule") == RULE:
    return capped, None
  return None


@dataclasses.dataclass(frozen=True)
class Line:
  """One arm of a group: every seed's row of it."""

  model: str
  pretrain: str
  finetune: str
  method: str  # `schema.method_label`: plain, lpft, wise0.5, ...
  finetune_lr: float | None
  fired: tuple[int, ...]  # the steps the rule ended rows at, ascending
  capped: int  # rows that ran to the cap

  @property
  def rows(self) -> int:
    return len(self.fired) + self.capped

  @property
  def median(self) -> float | None:
    if not self.fired:
      return None
    mid = len(self.fired) // 2
    return float(self.fired[mid]) if len(self.fired) % 2 else (self.fired[mid - 1] + self.fired[mid]) / 2


@dataclasses.dataclass(frozen=True)
class Group:
  """One protocol group's lines, and its rule."""

  protocol_key: str
  label: str  # how the leaderboard names the group ("" when the board has one)
  threshold: float
  window: int
  cap: int | None  # `finetune.steps`; None where no row says it
  lines: tuple[Line, ...]

  @property
  def heading(self) -> str:
    cap = "" if self.cap is None else f", cap {self.cap}"
    rule = f"stopping rule: running mean ≥ {self.threshold:g} over {self.window} steps{cap}"
    return f"protocol {self.label or self.protocol_key or '-'} · {rule}"

  @property
  def summary(self) -> str:
    """The group's totals, in words."""
    rows = sum(x.rows for x in self.lines)
    fired, capped = sum(len(x.fired) for x in self.lines), sum(x.capped for x in self.lines)
    cap = "" if self.cap is None else f" ({self.cap} steps)"
    return f"The rule fired in {fired} of {rows} rows; {capped} ran to the cap{cap}."


def groups(rows: Iterable[Mapping[str, Any]], labels: Mapping[str, str] | None = None) -> list[Group]:
  """The groups with a row under the stopping rule, in the rows' order; each one's lines in the board's
  order (`schema.sort_key`). `labels`: protocol key -> how the leaderboard names the group."""
  under = [(r, found) for r in rows if (found := stop_of(r)) is not None]
  by_group: dict[str, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))
  for r, found in under:
    by_group[r.get("protocol_key", "")][schema.group(r)].append((r, found))
  model_order = {m: i for i, m in enumerate(dict.fromkeys(r["model"] for r, _ in under))}
  order = schema.sort_key(model_order)
  out = []
  for key, arms in by_group.items():
    lines = []
    for members in sorted(arms.values(), key=lambda m: order(m[0][0])):
      first = members[0][0]
      fired = sorted(step for _, (_, step) in members if step is not None)
      label = schema.method_label(schema.dimension(first, schema.METHOD), schema.dimension(first, schema.SETTING))
      lines.append(
        Line(
          first["model"],
          first["pretrain"],
          first["finetune"],
          label,
          first.get(schema.LR),
          tuple(fired),
          len(members) - len(fired),
        )
      )
    members = [m for arm in arms.values() for m in arm]
    record = members[0][1][0]
    capped = [int(r["finetune_stop"]["step"]) for r, (_, step) in members if step is None]
    steps = (members[0][0].get("comparison") or {}).get("finetune.steps")
    cap = capped[0] if capped else None if steps is None else int(steps)
    label = (labels or {}).get(key, "")
    out.append(Group(key, label, float(record["threshold"]), int(record["window"]), cap, tuple(lines)))
  return out


def _step(value: float) -> str:
  return f"{value:g}"


def cells(line: Line) -> list[Any]:
  """The line as every output shows it (`COLUMNS`)."""
  lr = "-" if line.finetune_lr is None else schema.format_lr(line.finetune_lr)
  if line.fired:
    low, high = line.fired[0], line.fired[-1]
    median, span = _step(line.median), _step(low) if low == high else f"{low}-{high}"
  else:
    median = span = "-"
  identity = [line.model, line.pretrain, line.finetune, line.method, lr]
  return [*identity, line.rows, len(line.fired), median, span, line.capped]


def markdown(found: list[Group]) -> str:
  """leaderboard.md's section: a heading, then per group its rule, totals and lines."""
  parts = [f"## {TITLE}\n\n{INTRO}"]
  for g in found:
    table = tabulate([cells(x) for x in g.lines], headers=COLUMNS, tablefmt="github", disable_numparse=True)
    parts.append(f"### {g.heading}\n\n{g.summary}\n\n{table}")
  return "\n\n".join(parts)


def terminal(found: list[Group]) -> str:
  """The terminal's section: one heading line per group, its totals, and its lines."""
  parts = []
  for g in found:
    table = tabulate([cells(x) for x in g.lines], headers=COLUMNS, tablefmt="simple", disable_numparse=True)
    parts.append(f"[{g.heading}]\n{g.summary}\n{table}")
  return f"{TITLE} (the stopping rule fired, or the row ran to the cap):\n" + "\n\n".join(parts)


def to_json(found: list[Group]) -> list[dict[str, Any]]:
  """stopping.json: one entry per group (its rule, cap and totals), with one entry per line."""
  out = []
  for g in found:
    lines = [
      {
        "model": x.model,
        "pretrain": x.pretrain,
        "finetune": x.finetune,
        "method": x.method,
        "finetune_lr": x.finetune_lr,
        "rows": x.rows,
        "fired": len(x.fired),
        "capped": x.capped,
        "stop_steps": list(x.fired),
        "median_step": x.median,
        "min_step": x.fired[0] if x.fired else None,
        "max_step": x.fired[-1] if x.fired else None,
      }
      for x in g.lines
    ]
    totals = {k: sum(x[k] for x in lines) for k in ("rows", "fired", "capped")}
    rule = {"rule": RULE, "threshold": g.threshold, "window": g.window}
    out.append({"protocol_key": g.protocol_key, "group": g.label, **rule, "cap": g.cap, **totals, "lines": lines})
  return to_jsonable(out)


def write(found: list[Group], out_dir: str | os.PathLike) -> Path | None:
  """Writes stopping.json into `out_dir`; with no group under the rule, removes an earlier board's."""
  path = Path(out_dir) / FILE
  if not found:
    path.unlink(missing_ok=True)
    return None
  return atomic_write_text(path, json.dumps(to_json(found), indent=1, allow_nan=False) + "\n")
