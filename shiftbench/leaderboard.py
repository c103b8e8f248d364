"""Leaderboard: collect `results.json` files, aggregate rows over seeds (mean +- std), write tables.

Usage: `shiftbench-leaderboard RESULTS_DIR [RESULTS_DIR ...] [--out DIR]` (or `python -m
shiftbench.leaderboard`). Every `results.json` under the given paths is read (single runs, multiruns,
several seeds); rows are grouped by model x pretrain x fine-tune mode x dataset pair. Writes
`leaderboard.md` (with the claims report, `shiftbench.claims`), `leaderboard.csv`, `leaderboard.json` (one
RobustBench-like entry per group), `claims.json`, `rows.csv` (one line per row, `shiftbench.tidy`),
`index.html` (one self-contained page) and the figures `location_maps.png` and `forgetting_curves.png`.
A run writes its own leaderboard too.
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

from shiftbench import claims as claims_lib
from shiftbench import terminal, tidy
from shiftbench.errors import DataError, UserError
from shiftbench.results import atomic_write_text, to_jsonable
from shiftbench.settings import PRETRAIN_REGIMES
from shiftbench.train import TRAIN_MODES

GROUP_KEYS = ("model", "pretrain", "finetune", "datasets")
# Every per-row number aggregated over seeds, and its leaderboard column header.
METRICS = {
    "in_acc": "in_acc", "off_acc": "off_acc", "invariance": "invariance", "invariance_lost": "inv_lost",
    "consistency": "consistency", "consistency_circular": "consist_circ", "worst_case_acc": "worst_case",
    "worst_of_k_acc": "worst_of_k", "flip_rate": "flip_rate", "similarity": "similarity",
    "similarity_before": "sim_before", "pretrain_invariance_before": "A_inv_before",
    "pretrain_invariance_after": "A_inv_after", "pretrain_invariance_lost": "A_inv_lost",
}
REFERENCE = ("shiftbench protocol after Biscione & Bowers, JMLR 22 (2021), arXiv 2110.05861; "
             "consistency: Zhang, ICML 2019; worst case: Engstrom et al. 2019; flip rate: Hendrycks 2019")


@dataclasses.dataclass
class Board:
  columns: list[str]
  rows: list[list[Any]]
  markdown: str
  csv: str
  entries: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  claims: list[claims_lib.Claim] = dataclasses.field(default_factory=list)

  @property
  def claims_markdown(self) -> str:
    return claims_lib.markdown(self.claims)


def annotate(record: dict[str, Any]) -> list[dict[str, Any]]:
  """A results.json record's rows, each with its dataset pair and architecture config attached."""
  datasets = record.get("datasets") or {}
  pair = f"{datasets.get('pretrain', '?')} -> {datasets.get('finetune', '?')}" if datasets else ""
  models = (record.get("config") or {}).get("model") or {}
  return [{**r, "datasets": pair, "architecture": models.get(r["model"])} for r in record.get("rows", [])]


def collect(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
  """Every row of every `results.json` found under `paths` (files or directories, searched recursively)."""
  rows = []
  for p in paths:
    p = Path(p)
    if not p.exists():
      raise FileNotFoundError(f"no such results file or directory: {p}")
    files = [p] if p.is_file() else sorted(p.rglob("results.json"))
    for f in files:
      rows.extend(_read_rows(f))
  return rows


def _read_rows(path: Path) -> list[dict[str, Any]]:
  """The annotated rows of one results file; a `DataError` naming it if it is not one."""
  try:
    rows = annotate(json.loads(path.read_text()))
    for r in rows:
      missing = [k for k in ("model", "pretrain", "finetune", "seed") if k not in r]
      if missing:
        raise KeyError(", ".join(missing))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
    raise DataError(f"{path} is not a readable shiftbench results.json ({type(e).__name__}: {e}); it may be "
                    "truncated or corrupted: run that experiment again (it resumes) or leave the file out") from e
  return rows


def _mean_std(values: list[float | None]) -> tuple[float, float, int]:
  vals = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(float(v))]
  if not vals:
    return math.nan, math.nan, 0
  return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals)


def _mean_curve(members: list[dict[str, Any]]) -> list[dict[str, float]]:
  """The invariance-over-fine-tune-steps curve, averaged over seeds step by step."""
  by_step: dict[int, list[float | None]] = defaultdict(list)
  for m in members:
    for point in m.get("curve") or []:
      by_step[int(point["step"])].append(point.get("invariance"))
  return [{"step": s, "invariance": _mean_std(v)[0]} for s, v in sorted(by_step.items())]


def _mean_map(members: list[dict[str, Any]]) -> dict[str, Any] | None:
  maps = [m["location_map"] for m in members if m.get("location_map")]
  if not maps or any(np.shape(m["acc"]) != np.shape(maps[0]["acc"]) for m in maps):
    return maps[0] if maps else None
  acc = np.nanmean([np.asarray(m["acc"], float) for m in maps], axis=0)
  return {"ys": maps[0]["ys"], "xs": maps[0]["xs"], "acc": acc.tolist()}


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """One entry per model x pretrain x finetune x dataset pair with (mean, std, n) of each metric.

  `invariance_lost` = invariance(last) - invariance(full) for the same model, pretrain regime and seed
  (the forgetting result); rows from runs without it get it from the seed means instead. Every metric's
  mean and std use only the seeds where it is defined, and `n` says how many those are.
  """
  groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
  for r in rows:
    groups[tuple(r.get(k, "") for k in GROUP_KEYS)].append(r)
  out = []
  for key, members in groups.items():
    entry = dict(zip(GROUP_KEYS, key))
    entry["seeds"] = sorted({m["seed"] for m in members})
    for metric in METRICS:
      entry[metric] = _mean_std([m.get(metric) for m in members])
    entry["params"] = members[0].get("params")
    entry["architecture"] = members[0].get("architecture")
    entry["chance"] = members[0].get("chance")
    entry["finetune_location"] = members[0].get("finetune_location")
    entry["curve"], entry["location_map"] = _mean_curve(members), _mean_map(members)
    out.append(entry)
  by_key = {tuple(e[k] for k in GROUP_KEYS): e for e in out}
  for e in out:
    if e["invariance_lost"][2]:
      continue
    last = by_key.get((e["model"], e["pretrain"], "last", e["datasets"]))
    full = by_key.get((e["model"], e["pretrain"], "full", e["datasets"]))
    if last and full and last["invariance"][2] and full["invariance"][2]:
      e["invariance_lost"] = (last["invariance"][0] - full["invariance"][0], math.nan, 1)
  # Rows read like the protocol: models in the order they were run, then regimes from least to most
  # augmentation, then modes from least to most trained (alphabetical order would scatter them).
  model_order = {m: i for i, m in enumerate(dict.fromkeys(r["model"] for r in rows))}
  regime_order = {r: i for i, r in enumerate(PRETRAIN_REGIMES)}
  mode_order = {m: i for i, m in enumerate(TRAIN_MODES)}
  return sorted(out, key=lambda e: (e["datasets"], model_order[e["model"]], regime_order.get(e["pretrain"], 99),
                                    mode_order.get(e["finetune"], 99)))


def fmt_mean_std(ms: tuple[float, float, int], seeds: int | None = None) -> str:
  """(mean, std, n) as "mean ± std" ("-" when no seed has a value), with "(n=k)" appended when fewer
  values than `seeds` are behind it (the rest undefined), so a mean over one seed never reads as three."""
  mean, std, n = ms
  if n == 0:
    return "-"
  text = f"{mean:.3f}" if n == 1 or math.isnan(std) else f"{mean:.3f} ± {std:.3f}"
  return f"{text} (n={n})" if seeds is not None and n < seeds else text


def json_entry(e: dict[str, Any]) -> dict[str, Any]:
  """A RobustBench-like record of one leaderboard row (values are seed means; `*_std` their spread)."""
  entry = {"model": e["model"], "architecture": e["architecture"], "pretrain": e["pretrain"],
           "finetune": e["finetune"], "dataset_pair": e["datasets"], "seeds": e["seeds"], "params": e["params"],
           "chance": e["chance"], "reference": REFERENCE}
  for metric in METRICS:
    mean, std, n = e[metric]
    entry[metric], entry[f"{metric}_std"] = (mean, std) if n else (None, None)
    entry[f"{metric}_n"] = n
  return to_jsonable(entry)


def build(rows: list[dict[str, Any]]) -> Board:
  entries = aggregate(rows)
  several_pairs = len({e["datasets"] for e in entries}) > 1
  columns = ["model", "pretrain", "finetune", *(["datasets"] if several_pairs else []), "seeds",
             *METRICS.values(), "params"]
  table = [[e["model"], e["pretrain"], e["finetune"], *([e["datasets"]] if several_pairs else []), len(e["seeds"]),
            *(fmt_mean_std(e[m], len(e["seeds"])) for m in METRICS), e["params"] if e["params"] is not None else "-"]
           for e in entries]
  markdown = tabulate(table, headers=columns, tablefmt="github")
  buf = io.StringIO()
  writer = csv.writer(buf)
  writer.writerow(["model", "pretrain", "finetune", "datasets", "n_seeds"]
                  + [f"{m}_{s}" for m in METRICS for s in ("mean", "std", "n")] + ["params"])
  for e in entries:
    writer.writerow([e["model"], e["pretrain"], e["finetune"], e["datasets"], len(e["seeds"])]
                    + [v for m in METRICS for v in e[m]] + [e["params"]])
  return Board(columns, table, markdown, buf.getvalue(), entries, claims_lib.evaluate(rows))


def write_leaderboard(rows: list[dict[str, Any]], out_dir: str | Path, figures: bool = True) -> Board:
  """Writes the tables (Markdown, CSV, JSON) and, with `figures`, the HTML page and PNG figures."""
  from shiftbench import report  # matplotlib is only needed for the figures

  board = build(rows)
  out_dir = Path(out_dir)
  atomic_write_text(out_dir / "leaderboard.md",
                    f"{board.markdown}\n\n## Claims from the literature\n\n{board.claims_markdown}\n")
  atomic_write_text(out_dir / "leaderboard.csv", board.csv)
  atomic_write_text(out_dir / "leaderboard.json",
                    json.dumps([json_entry(e) for e in board.entries], indent=1, allow_nan=False) + "\n")
  atomic_write_text(out_dir / "claims.json",
                    json.dumps(to_jsonable(claims_lib.to_json(board.claims)), indent=1, allow_nan=False) + "\n")
  tidy.write_rows(rows, out_dir)
  if figures:
    report.write_report(board, out_dir)
  return board


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="shiftbench-leaderboard", description=__doc__.splitlines()[0])
  parser.add_argument("paths", nargs="+", help="results.json files or directories to search")
  parser.add_argument("--out", default=".", help="where to write the tables, index.html and figures")
  parser.add_argument("--no-figures", action="store_true", help="tables only (no matplotlib, no HTML)")
  args = parser.parse_args(argv)
  try:
    rows = collect(args.paths)
  except (UserError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from e  # the cause as the last line, no traceback
  if not rows:
    raise SystemExit(f"no results.json rows found under: {', '.join(args.paths)}")
  board = write_leaderboard(rows, args.out, figures=not args.no_figures)
  print(terminal.summary(board, args.out))
  if not args.no_figures:
    print(f"\nwrote {Path(args.out) / 'index.html'}")


if __name__ == "__main__":
  main()
