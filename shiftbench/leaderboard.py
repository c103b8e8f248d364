"""Leaderboard: collect `results.json` files, aggregate rows over seeds (mean +- std), write tables.

Usage: `shiftbench-leaderboard RESULTS_DIR [RESULTS_DIR ...] [--out DIR]` (or `python -m
shiftbench.leaderboard`). Every `results.json` under the given paths is read (single runs, multiruns,
several seeds); rows are grouped by model x pretrain x fine-tune mode x comparison key (every setting that
can change the numbers, `shiftbench.comparison`): runs that differ in a setting never merge, and the settings
in which the groups differ are columns of the table. The same row collected twice counts once; the same
(key, seed) with different numbers is an error naming both files. Writes
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
from shiftbench import comparison, terminal, tidy
from shiftbench.errors import DataError, UserError
from shiftbench.results import atomic_write_text, to_jsonable
from shiftbench.settings import PRETRAIN_REGIMES
from shiftbench.train import TRAIN_MODES

GROUP_KEYS = ("model", "pretrain", "finetune", "comparison_key")
IDENTITY = ("comparison_key", "model", "pretrain", "finetune", "seed")  # one row of one experiment
# Fields that may differ between two copies of one row (where and how fast it ran), not its numbers.
_NOT_NUMBERS = ("heatmap", "source", "eval_seconds", "finetune_seconds", "train_final", "datasets", "architecture")
# Every per-row number aggregated over seeds, and its leaderboard column header.
METRICS = {
  "in_acc": "in_acc",
  "off_acc": "off_acc",
  "invariance": "invariance",
  "invariance_lost": "inv_lost",
  "consistency": "consistency",
  "consistency_circular": "consist_circ",
  "worst_case_acc": "worst_case",
  "worst_of_k_acc": "worst_of_k",
  "flip_rate": "flip_rate",
  "similarity": "similarity",
  "similarity_before": "sim_before",
  "pretrain_invariance_before": "A_inv_before",
  "pretrain_invariance_after": "A_inv_after",
  "pretrain_invariance_lost": "A_inv_lost",
}
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

  @property
  def claims_markdown(self) -> str:
    return claims_lib.markdown(self.claims)


def annotate(record: dict[str, Any], source: str | Path | None = None) -> list[dict[str, Any]]:
  """A results.json record's rows, each with its dataset pair, architecture config and source attached.

  Rows written before comparison keys existed (shiftbench <= 0.3) get one computed from the record's
  config, with unknown data hashes: they never merge with a newer row.
  """
  datasets = record.get("datasets") or {}
  pair = f"{datasets.get('pretrain', '?')} -> {datasets.get('finetune', '?')}" if datasets else ""
  config = record.get("config") or {}
  models = config.get("model") or {}
  version = ((record.get("environment") or {}).get("versions") or {}).get("shiftbench") or "?"
  protocol = None
  out = []
  for r in record.get("rows", []):
    r = {**r, "datasets": pair, "architecture": models.get(r["model"]), "source": str(source or "")}
    if "comparison_key" not in r:
      protocol = protocol or comparison.protocol_settings(
        config, {"pretrain": datasets.get("pretrain_sha256"), "finetune": datasets.get("finetune_sha256")}, version
      )
      r["comparison"] = comparison.row_settings(protocol, r["architecture"])
      r["comparison_key"] = comparison.key_of(r["comparison"])
      r["protocol_key"] = comparison.key_of(protocol)
    out.append(r)
  return out


def _numbers(row: dict[str, Any]) -> str:
  return json.dumps({k: v for k, v in row.items() if k not in _NOT_NUMBERS}, sort_keys=True, default=str)


def merge_duplicates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Each (comparison key, model, pretrain, finetune, seed) once: a copy with identical numbers (a run
  directory collected twice, or copied) is dropped; different numbers for one identity are a
  `DataError` naming both files."""
  seen: dict[tuple, dict[str, Any]] = {}
  out = []
  for r in rows:
    ident = tuple(r.get(k) for k in IDENTITY)
    first = seen.get(ident)
    if first is None:
      seen[ident] = r
      out.append(r)
    elif _numbers(first) != _numbers(r):
      raise DataError(
        f"{first['source'] or 'a results file'} and {r['source'] or 'another'} both hold "
        f"{r['model']}/{r['pretrain']}/{r['finetune']} seed {r['seed']} of experiment "
        f"{r['comparison_key']} with different numbers; the same settings and seed must give the "
        "same row: leave one of the files out"
      )
  return out


def collect(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
  """Every row of every `results.json` found under `paths` (files or directories, searched recursively),
  each (experiment, seed) once (`merge_duplicates`)."""
  rows = []
  for p in paths:
    p = Path(p)
    if not p.exists():
      raise FileNotFoundError(f"no such results file or directory: {p}")
    files = [p] if p.is_file() else sorted(p.rglob("results.json"))
    for f in files:
      rows.extend(_read_rows(f))
  return merge_duplicates(rows)


def _read_rows(path: Path) -> list[dict[str, Any]]:
  """The annotated rows of one results file; a `DataError` naming it if it is not one."""
  try:
    rows = annotate(json.loads(path.read_text()), source=path)
    for r in rows:
      missing = [k for k in ("model", "pretrain", "finetune", "seed") if k not in r]
      if missing:
        raise KeyError(", ".join(missing))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
    raise DataError(
      f"{path} is not a readable shiftbench results.json ({type(e).__name__}: {e}); it may be "
      "truncated or corrupted: run that experiment again (it resumes) or leave the file out"
    ) from e
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
  """One entry per model x pretrain x finetune x dataset pair with (mean, std, n) of each metric.

  `invariance_lost` = invariance(last) - invariance(full) for the same model, pretrain regime and seed
  (the forgetting result); rows from runs without it get it from the seed means instead. Every metric's
  mean and std use only the seeds where it is defined, and `n` says how many those are.
  """
  groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
  for r in merge_duplicates(rows):
    groups[tuple(r.get(k, "") for k in GROUP_KEYS)].append(r)
  out = []
  for key, members in groups.items():
    entry = dict(zip(GROUP_KEYS, key))
    entry["seeds"] = sorted({m["seed"] for m in members})
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
  by_key = {tuple(e[k] for k in GROUP_KEYS): e for e in out}
  for e in out:
    if e["invariance_lost"][2]:
      continue
    last = by_key.get((e["model"], e["pretrain"], "last", e["comparison_key"]))
    full = by_key.get((e["model"], e["pretrain"], "full", e["comparison_key"]))
    if last and full and last["invariance"][2] and full["invariance"][2]:
      e["invariance_lost"] = (last["invariance"][0] - full["invariance"][0], math.nan, 1)
  # Rows read like the protocol: models in the order they were run, then regimes from least to most
  # augmentation, then modes from least to most trained (alphabetical order would scatter them).
  model_order = {m: i for i, m in enumerate(dict.fromkeys(r["model"] for r in rows))}
  regime_order = {r: i for i, r in enumerate(PRETRAIN_REGIMES)}
  mode_order = {m: i for i, m in enumerate(TRAIN_MODES)}
  group_order = {g: i for i, g in enumerate(dict.fromkeys(r.get("protocol_key", "") for r in rows))}
  return sorted(
    out,
    key=lambda e: (
      group_order.get(e["protocol_key"], 99),
      model_order[e["model"]],
      regime_order.get(e["pretrain"], 99),
      mode_order.get(e["finetune"], 99),
    ),
  )


def differing_settings(entries: list[dict[str, Any]]) -> list[str]:
  """The settings in which the leaderboard's groups differ: protocol settings between protocol groups,
  and architecture settings between groups of one model name (model names already tell models apart)."""
  protocols = {e["protocol_key"]: comparison.protocol_part(e["settings"]) for e in entries}
  names = comparison.differing(protocols.values()) if len(protocols) > 1 else []
  by_model: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
  for e in entries:
    arch = {k: v for k, v in e["settings"].items() if k.startswith("architecture.")}
    by_model[e["model"]][comparison.key_of(arch)] = arch
  for archs in by_model.values():
    if len(archs) > 1:
      names += [n for n in comparison.differing(archs.values()) if n not in names]
  return names


def group_labels(entries: list[dict[str, Any]], names: list[str]) -> dict[str, str]:
  """protocol key -> a short label: the key and its values of the differing protocol settings."""
  out = {}
  for e in entries:
    shown = [f"{n}={_cell(e['settings'].get(n))}" for n in names if not n.startswith("architecture.")]
    out[e["protocol_key"]] = " ".join([e["protocol_key"], *shown])
  return out


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


def json_entry(e: dict[str, Any]) -> dict[str, Any]:
  """A RobustBench-like record of one leaderboard row (values are seed means; `*_std` their spread)."""
  entry = {
    "model": e["model"],
    "architecture": e["architecture"],
    "pretrain": e["pretrain"],
    "finetune": e["finetune"],
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


def build(rows: list[dict[str, Any]]) -> Board:
  rows = merge_duplicates(rows)
  entries = aggregate(rows)
  differ = differing_settings(entries)
  several = len({e["protocol_key"] for e in entries}) > 1
  columns = [
    "model",
    "pretrain",
    "finetune",
    *(["protocol"] if several else []),
    *differ,
    "seeds",
    *METRICS.values(),
    "params",
  ]
  table = [
    [
      e["model"],
      e["pretrain"],
      e["finetune"],
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
    ["model", "pretrain", "finetune", "comparison_key", "protocol_key", *differ, "datasets", "n_seeds"]
    + [f"{m}_{s}" for m in METRICS for s in ("mean", "std", "n")]
    + ["params"]
  )
  for e in entries:
    writer.writerow(
      [
        e["model"],
        e["pretrain"],
        e["finetune"],
        e["comparison_key"],
        e["protocol_key"],
        *(_cell(e["settings"].get(n)) for n in differ),
        e["datasets"],
        len(e["seeds"]),
      ]
      + [v for m in METRICS for v in e[m]]
      + [e["params"]]
    )
  claims = claims_lib.evaluate(rows, group_labels(entries, differ))
  return Board(columns, table, markdown, buf.getvalue(), entries, claims)


def write_leaderboard(rows: list[dict[str, Any]], out_dir: str | Path, figures: bool = True) -> Board:
  """Writes the tables (Markdown, CSV, JSON) and, with `figures`, the HTML page and PNG figures."""
  from shiftbench import report  # matplotlib is only needed for the figures

  board = build(rows)
  out_dir = Path(out_dir)
  atomic_write_text(
    out_dir / "leaderboard.md", f"{board.markdown}\n\n## Claims from the literature\n\n{board.claims_markdown}\n"
  )
  atomic_write_text(out_dir / "leaderboard.csv", board.csv)
  atomic_write_text(
    out_dir / "leaderboard.json", json.dumps([json_entry(e) for e in board.entries], indent=1, allow_nan=False) + "\n"
  )
  atomic_write_text(
    out_dir / "claims.json", json.dumps(to_jsonable(claims_lib.to_json(board.claims)), indent=1, allow_nan=False) + "\n"
  )
  tidy.write_rows(merge_duplicates(rows), out_dir)
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
