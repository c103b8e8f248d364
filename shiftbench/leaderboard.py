"""Leaderboard: collect `results.json` files, aggregate rows over seeds (mean +- std), write tables.

Usage: `shiftbench-leaderboard RESULTS_DIR [RESULTS_DIR ...] [--out DIR]` (or `python -m
shiftbench.leaderboard`). A run writes its own leaderboard too (`leaderboard.md`, `leaderboard.csv`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from shiftbench.results import atomic_write_text

GROUP_KEYS = ("model", "pretrain", "finetune")
METRICS = ("in_acc", "off_acc", "invariance", "pretrain_invariance_before", "pretrain_invariance_after")


@dataclasses.dataclass
class Board:
  columns: list[str]
  rows: list[list[Any]]
  markdown: str
  csv: str


def collect(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
  """Every row of every `results.json` found under `paths` (files or directories, searched recursively)."""
  rows = []
  for p in paths:
    p = Path(p)
    if not p.exists():
      raise FileNotFoundError(f"no such results file or directory: {p}")
    files = [p] if p.is_file() else sorted(p.rglob("results.json"))
    for f in files:
      rows.extend(json.loads(f.read_text()).get("rows", []))
  return rows


def _mean_std(values: list[float | None]) -> tuple[float, float, int]:
  vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
  if not vals:
    return math.nan, math.nan, 0
  return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals)


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """One entry per model x pretrain x finetune with mean, std and count of each metric over seeds.

  Also derives `invariance_lost` = invariance(head) - invariance(full) for the same model and pretrain
  regime (the forgetting result), from the seed means.
  """
  groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
  for r in rows:
    groups[tuple(r[k] for k in GROUP_KEYS)].append(r)
  out = []
  for key, members in groups.items():
    entry = dict(zip(GROUP_KEYS, key))
    entry["seeds"] = sorted({m["seed"] for m in members})
    for metric in METRICS:
      entry[metric] = _mean_std([m.get(metric) for m in members])
    out.append(entry)
  by_key = {tuple(e[k] for k in GROUP_KEYS): e for e in out}
  for e in out:
    head, full = by_key.get((e["model"], e["pretrain"], "head")), by_key.get((e["model"], e["pretrain"], "full"))
    lost = head["invariance"][0] - full["invariance"][0] if head and full else math.nan
    e["invariance_lost"] = lost
  return sorted(out, key=lambda e: (e["model"], e["pretrain"], e["finetune"]))


def _fmt(ms: tuple[float, float, int]) -> str:
  mean, std, n = ms
  if n == 0:
    return "-"
  return f"{mean:.3f}" if n == 1 else f"{mean:.3f} ± {std:.3f}"


def build(rows: list[dict[str, Any]]) -> Board:
  entries = aggregate(rows)
  columns = ["model", "pretrain", "finetune", "seeds", "in_acc", "off_acc", "invariance", "invariance_lost",
             "A_invariance_before", "A_invariance_after"]
  table = [[e["model"], e["pretrain"], e["finetune"], len(e["seeds"]), _fmt(e["in_acc"]), _fmt(e["off_acc"]),
            _fmt(e["invariance"]), "-" if math.isnan(e["invariance_lost"]) else f"{e['invariance_lost']:.3f}",
            _fmt(e["pretrain_invariance_before"]), _fmt(e["pretrain_invariance_after"])] for e in entries]
  markdown = tabulate(table, headers=columns, tablefmt="github")
  buf = io.StringIO()
  writer = csv.writer(buf)
  writer.writerow(["model", "pretrain", "finetune", "n_seeds"] + [f"{m}_{s}" for m in METRICS
                                                                  for s in ("mean", "std")] + ["invariance_lost"])
  for e in entries:
    writer.writerow([e["model"], e["pretrain"], e["finetune"], len(e["seeds"])]
                    + [v for m in METRICS for v in e[m][:2]] + [e["invariance_lost"]])
  return Board(columns, table, markdown, buf.getvalue())


def write_leaderboard(rows: list[dict[str, Any]], out_dir: str | Path) -> Board:
  board = build(rows)
  out_dir = Path(out_dir)
  atomic_write_text(out_dir / "leaderboard.md", board.markdown + "\n")
  atomic_write_text(out_dir / "leaderboard.csv", board.csv)
  return board


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="shiftbench-leaderboard", description=__doc__.splitlines()[0])
  parser.add_argument("paths", nargs="+", help="results.json files or directories to search")
  parser.add_argument("--out", default=".", help="where to write leaderboard.md and leaderboard.csv")
  args = parser.parse_args(argv)
  rows = collect(args.paths)
  if not rows:
    raise SystemExit(f"no results.json rows found under: {', '.join(args.paths)}")
  board = write_leaderboard(rows, args.out)
  print(board.markdown)


if __name__ == "__main__":
  main()
