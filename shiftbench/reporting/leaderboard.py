"""Leaderboard: collect `results.json` files, aggregate rows over seeds (mean +- std), write tables.

Usage: `shiftbench-leaderboard RESULTS_DIR [RESULTS_DIR ...] [--out DIR]` (or `python -m
shiftbench.reporting.leaderboard`). Every `results.json` under the given paths is read (single runs, multiruns,
several seeds); rows are grouped by model x pretrain x fine-tune mode x comparison key (every setting that
can change the numbers, `shiftbench.rows.comparison`): runs that differ in a setting never merge, and the settings
in which the groups differ are columns of the table. The same row collected twice counts once; the same
(key, seed) with different numbers is an error naming both files. Writes
`leaderboard.md` (with the claims report, `shiftbench.claims.catalogue`), `leaderboard.csv`, `leaderboard.json` (one
RobustBench-like entry per group), `claims.json`, `rows.csv` (one line per row, `shiftbench.reporting.tidy`),
`index.html` (one self-contained page) and the figures `headline.png` (invariance against the fine-tune
rate, `shiftbench.reporting.headline`; only with 2 or more rates), `location_maps.png` and `forgetting_curves.png`.
When any row is a fine-tuning method's (`finetune.methods`), also the methods board
(`shiftbench.reporting.methods_board`):
`methods.md`, `methods.csv`, `methods.json` and `methods_pareto.png`, a section of `index.html`.
When any row was fine-tuned under the stopping rule (`finetune.until_accuracy`), also where fine-tuning
stopped (`shiftbench.reporting.stopping`): `stopping.json`, a section of `leaderboard.md`, the terminal
summary and `index.html`.
A run writes its own leaderboard too.

Without `--out` the files go into a new folder, `leaderboard-<date>-<time>/` in the current directory
(`default_out`), never loose into the current directory itself.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from shiftbench.claims import catalogue as claims_lib
from shiftbench.infra.errors import UserError
from shiftbench.infra.files import atomic_write_text, to_jsonable
from shiftbench.reporting import methods_board, reference_board, stopping, terminal, tidy
from shiftbench.rows import comparison, reference, schema
from shiftbench.rows.collect import collect, merge_duplicates

METRICS = schema.METRICS
# Significant digits of the floats in leaderboard.csv: the metrics are float32 means (about 7 digits), so more
# would print float32 noise (0.10000000149011612), fewer could merge two different means.
CSV_DIGITS = 6
REFERENCE = (
  "shiftbench protocol after Biscione & Bowers, JMLR 22 (2021), arXiv 2110.05861; "
  "consistency: Zhang, ICML 2019; worst case: Engstrom et al. 2019; flip rate: Hendrycks 2019"
)


@dataclasses.dataclass
class Board:
  columns: list[str]
  rows: list[list[Any]]
  markdown: str
  csv: str
  entries: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  claims: list[claims_lib.Claim] = dataclasses.field(default_factory=list)
  # The results rows behind `entries` (duplicates merged): the headline figure draws their seeds.
  source_rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  # The methods board's tables (`methods_board.tables`): none unless a row is a method's.
  methods: list[methods_board.Table] = dataclasses.field(default_factory=list)
  # Where fine-tuning stopped (`stopping.groups`): none unless a row ran under the stopping rule.
  stopping: list[stopping.Group] = dataclasses.field(default_factory=list)

  @property
  def claims_markdown(self) -> str:
    return claims_lib.markdown(self.claims)


def _mean_std(values: list[float | None]) -> tuple[float, float, int]:
  vals = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(float(v))]
  if not vals:
    return math.nan, math.nan, 0
  return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals)


def _mean_curve(members: list[dict[str, Any]]) -> list[dict[str, float]]:
  """The invariance-over-fine-tune-steps curve, averaged over seeds step by step."""
  by_step: dict[int, list[float | None]] = defaultdict(list)
  in_acc: dict[int, list[float | None]] = defaultdict(list)  # the figures mark points near chance
  probe: dict[int, list[bool]] = defaultdict(list)  # step 0 read from the `last` row's probe (the figures mark it)
  for m in members:
    for point in m.get("curve") or []:
      by_step[int(point["step"])].append(point.get("invariance"))
      in_acc[int(point["step"])].append(point.get("in_acc"))
      probe[int(point["step"])].append(point.get("from") == "probe")
  return [
    {
      "step": s,
      "invariance": _mean_std(v)[0],
      "in_acc": _mean_std(in_acc[s])[0],
      **({"from": "probe"} if all(probe[s]) else {}),
    }
    for s, v in sorted(by_step.items())
  ]


def _mean_map(members: list[dict[str, Any]]) -> dict[str, Any] | None:
  """The seed-mean location map; None when the maps are not on one grid (they never average)."""
  maps = [m["location_map"] for m in members if m.get("location_map")]
  if not maps or any(
    np.shape(m["acc"]) != np.shape(maps[0]["acc"])
    or not np.array_equal(m["ys"], maps[0]["ys"])
    or not np.array_equal(m["xs"], maps[0]["xs"])
    for m in maps
  ):
    return None
  acc = np.nanmean([np.asarray(m["acc"], float) for m in maps], axis=0)
  return {"ys": maps[0]["ys"], "xs": maps[0]["xs"], "acc": acc.tolist()}


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """One entry per leaderboard line (`schema.GROUP`: the row's dimensions within one experiment) with
  (mean, std, n) of each metric.

  `invariance_lost` (`schema.fill_invariance_lost`) is each row's own loss against the `last` row of its
  experiment, model, regime, rate and seed, filled in here for rows that were run apart. Every
  metric's mean and std use only the seeds where it is defined, and `n` says how many those are.
  """
  rows = [dict(r) for r in merge_duplicates(rows)]
  schema.fill_invariance_lost(rows)
  out = []
  for key, members in schema.by_group(rows).items():
    entry = dict(zip(schema.GROUP, key))
    entry["seeds"] = sorted({m[schema.SEED] for m in members})
    entry["datasets"] = members[0].get("datasets", "")
    entry["protocol_key"] = members[0].get("protocol_key", "")
    entry["settings"] = members[0].get("comparison") or {}
    for metric in METRICS:
      entry[metric] = _mean_std([m.get(metric) for m in members])
    entry["params"] = members[0].get("params")
    entry["architecture"] = members[0].get("architecture")
    entry["chance"] = members[0].get("chance")
    entry["finetune_location"] = members[0].get("finetune_location")
    entry["curve"], entry["location_map"] = _mean_curve(members), _mean_map(members)
    out.append(entry)
  # Experiments in the order they were read, then the rows' own order (`schema.sort_key`).
  model_order = {m: i for i, m in enumerate(dict.fromkeys(r["model"] for r in rows))}
  group_order = {g: i for i, g in enumerate(dict.fromkeys(r.get("protocol_key", "") for r in rows))}
  row_order = schema.sort_key(model_order)
  return sorted(out, key=lambda e: (group_order.get(e["protocol_key"], 99), *row_order(e)))


def group_labels(entries: list[dict[str, Any]], names: list[str]) -> dict[str, str]:
  """protocol key -> a short label: the key and its values of the differing protocol settings."""
  out = {}
  for e in entries:
    shown = [f"{n}={_cell(e['settings'].get(n))}" for n in names if not n.startswith(comparison.ROW_PARTS)]
    out[e["protocol_key"]] = " ".join([e["protocol_key"], *shown])
  return out


def _dimension(value: Any) -> Any:
  """A dimension's value as the tables show it: a method's absent setting (None) as "-"."""
  return "-" if value is None else value


def _cell(value: Any) -> str:
  return "-" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def fmt_mean_std(ms: tuple[float, float, int], seeds: int | None = None) -> str:
  """(mean, std, n) as "mean ± std" ("-" when no seed has a value), with "(n=k)" appended when fewer
  values than `seeds` are behind it (the rest undefined), so a mean over one seed never reads as three."""
  mean, std, n = ms
  if n == 0:
    return "-"
  text = f"{mean:.3f}" if n == 1 or math.isnan(std) else f"{mean:.3f} ± {std:.3f}"
  return f"{text} (n={n})" if seeds is not None and n < seeds else text


def csv_number(value: Any) -> Any:
  """A float as leaderboard.csv writes it: `CSV_DIGITS` significant digits (`nan` where undefined); other
  values as they are."""
  return format(value, f".{CSV_DIGITS}g") if isinstance(value, float) else value


def json_entry(e: dict[str, Any]) -> dict[str, Any]:
  """A RobustBench-like record of one leaderboard row (values are seed means; `*_std` their spread)."""
  entry = {
    **{k: e[k] for k in schema.DIMENSIONS},
    **{k: e[k] for k in reference_board.COLUMNS if k in e},  # where the board has reference rows
    "architecture": e["architecture"],
    "dataset_pair": e["datasets"],
    "comparison_key": e["comparison_key"],
    "protocol_key": e["protocol_key"],
    "settings": e["settings"],
    "seeds": e["seeds"],
    "params": e["params"],
    "chance": e["chance"],
    "reference": REFERENCE,
  }
  for metric in METRICS:
    mean, std, n = e[metric]
    entry[metric], entry[f"{metric}_std"] = (mean, std) if n else (None, None)
    entry[f"{metric}_n"] = n
  return to_jsonable(entry)


def build(rows: list[dict[str, Any]], reference_rows: reference.Choice = False) -> Board:
  """The board of `rows`, with the reference rows of their protocols beside them (`reference_rows`: False,
  True for the shipped sets, or given sets; `shiftbench.rows.reference.merge`)."""
  rows = reference.merge(merge_duplicates(rows), reference.sets(reference_rows))
  entries = aggregate(rows)
  marked = reference_board.present(rows)  # a source and a rank column, lines ranked within each arm
  if marked:
    entries = reference_board.mark(entries, rows)
  differ = comparison.differing_settings(entries)
  several = len({e["protocol_key"] for e in entries}) > 1
  columns = [
    *schema.DIMENSIONS,
    *(reference_board.COLUMNS if marked else ()),
    *(["protocol"] if several else []),
    *differ,
    "seeds",
    *METRICS.values(),
    "params",
  ]
  table = [
    [
      *(_dimension(e[k]) for k in schema.DIMENSIONS),
      *((e[k] for k in reference_board.COLUMNS) if marked else ()),
      *([e["protocol_key"]] if several else []),
      *(_cell(e["settings"].get(n)) for n in differ),
      len(e["seeds"]),
      *(fmt_mean_std(e[m], len(e["seeds"])) for m in METRICS),
      e["params"] if e["params"] is not None else "-",
    ]
    for e in entries
  ]
  markdown = tabulate(table, headers=columns, tablefmt="github")
  buf = io.StringIO()
  writer = csv.writer(buf)
  writer.writerow(
    [*schema.DIMENSIONS, *(reference_board.COLUMNS if marked else ()), *schema.KEYS, *differ, "datasets", "n_seeds"]
    + [f"{m}_{s}" for m in METRICS for s in ("mean", "std", "n")]
    + ["params"]
  )
  for e in entries:
    writer.writerow(
      [
        *(e[k] for k in schema.DIMENSIONS),
        *((e[k] for k in reference_board.COLUMNS) if marked else ()),
        *(e[k] for k in schema.KEYS),
        *(_cell(e["settings"].get(n)) for n in differ),
        e["datasets"],
        len(e["seeds"]),
      ]
      + [csv_number(v) for m in METRICS for v in e[m]]
      + [e["params"]]
    )
  labels = group_labels(entries, differ)
  claims = claims_lib.evaluate(rows, labels)
  reference_board.note_claims(claims, rows)
  methods = methods_board.tables(rows, labels if several else None)
  stops = stopping.groups(rows, labels if several else None)
  return Board(columns, table, markdown, buf.getvalue(), entries, claims, rows, methods, stops)


def write_leaderboard(
  rows: list[dict[str, Any]], out_dir: str | Path, figures: bool = True, reference_rows: reference.Choice = False
) -> Board:
  """Writes the tables (Markdown, CSV, JSON; the methods board's where a row is a method's) and, with
  `figures`, the HTML page and PNG figures; `reference_rows` as `build`'s."""
  from shiftbench.reporting import page as report  # matplotlib is only needed for the figures

  board = build(rows, reference_rows)
  out_dir = Path(out_dir)
  stops = f"{stopping.markdown(board.stopping)}\n\n" if board.stopping else ""
  atomic_write_text(
    out_dir / "leaderboard.md",
    f"{board.markdown}\n\n{stops}## Claims from the literature\n\n{board.claims_markdown}\n",
  )
  atomic_write_text(out_dir / "leaderboard.csv", board.csv)
  atomic_write_text(
    out_dir / "leaderboard.json", json.dumps([json_entry(e) for e in board.entries], indent=1, allow_nan=False) + "\n"
  )
  atomic_write_text(
    out_dir / "claims.json", json.dumps(to_jsonable(claims_lib.to_json(board.claims)), indent=1, allow_nan=False) + "\n"
  )
  methods_board.write(board.methods, out_dir)  # none without method rows (and an earlier board's removed)
  stopping.write(board.stopping, out_dir)  # none without rows under the stopping rule (likewise)
  tidy.write_rows(board.source_rows, out_dir)
  if figures:
    report.write_report(board, out_dir)
  return board


def default_out(now: datetime.datetime | None = None) -> Path:
  """Where `shiftbench-leaderboard` writes without `--out`: a new folder named after the time, in the
  current directory (`leaderboard-2026-12-07-08-30-00`)."""
  return Path(f"leaderboard-{(now or datetime.datetime.now()):%Y-%m-%d-%H-%M-%S}")


class _Parser(argparse.ArgumentParser):
  """argparse's, with a mistake on the command line as one line (it prints the usage above it)."""

  def error(self, message: str) -> None:  # type: ignore[override]
    _fail(f"{message} (see {self.prog} --help)")


def _fail(message: str) -> None:
  """Ends the tool with `error: <message>` on one line of stderr (exit status 1), and no traceback."""
  raise SystemExit(f"error: {' '.join(str(message).split())}")


def main(argv: list[str] | None = None) -> None:
  parser = _Parser(prog="shiftbench-leaderboard", description=__doc__.splitlines()[0])
  parser.add_argument("paths", nargs="+", help="results.json files or directories to search")
  parser.add_argument(
    "--out",
    default=None,
    help="the folder to write the tables, claims, index.html and figures into (created if missing); default: "
    "a new folder leaderboard-<date>-<time>/ in the current directory",
  )
  parser.add_argument("--no-figures", action="store_true", help="tables only (no matplotlib, no HTML)")
  parser.add_argument(
    "--no-reference",
    action="store_true",
    help="leave out the shipped reference rows (by default the board ranks the rows beside them where a "
    "protocol key matches)",
  )
  args = parser.parse_args(argv)
  out = Path(args.out) if args.out is not None else default_out()
  # Each mistake is one line, `error: ...`, with no traceback above it.
  try:
    rows = collect(args.paths)
  except (UserError, OSError) as e:
    _fail(str(e))
  if not rows:
    _fail(
      f"no results.json rows found under: {', '.join(args.paths)}; give run directories (each holds a "
      "results.json once a row has finished) or results.json files"
    )
  if out.exists() and not out.is_dir():
    _fail(f"--out {out} is a file; give a directory for the leaderboard's files")
  try:
    board = write_leaderboard(rows, out, figures=not args.no_figures, reference_rows=not args.no_reference)
  except OSError as e:  # --out is not writable
    where = f" ({e.filename})" if e.filename else ""
    _fail(f"cannot write the leaderboard to --out {out}: {e.strerror or e}{where}")
  except UserError as e:
    _fail(str(e))
  print(terminal.summary(board, out))
  print(f"\nwrote the leaderboard into {out}/" + ("" if args.no_figures else f" (open {out / 'index.html'})"))


if __name__ == "__main__":
  main()
