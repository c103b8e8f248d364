"""The tidy results table: one line per results row, for a researcher's own plots (pandas, seaborn, R).

`leaderboard.csv` is aggregated over seeds; `rows.csv` is not. Its columns:
  identity   `model`, `pretrain`, `finetune`, `seed`, then the comparison key (and the protocol key and
             dataset pair where rows carry them);
  settings   every setting (dotted name, e.g. `canvas.size`) in which the rows' experiments differ, as the
             leaderboard shows them (`leaderboard.differing_settings`: protocol settings, and architecture
             settings between rows of one model name), so two runs that differ only in canvas size get a
             `canvas.size` column and nothing else;
  metrics    every scalar metric of any row (`shiftbench.tracking.scalar_metrics`; per-layer similarity
             as `similarity_layers/<layer>`), empty where a row has none or it is undefined.
Written next to every leaderboard (each run, and `shiftbench-leaderboard`), as `rows.csv` and, since
pyarrow comes with tensorflow-datasets, `rows.parquet`. `shiftbench.results.load_rows` reads it back
as a pandas DataFrame.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

from shiftbench import tracking
from shiftbench.results import atomic_write_text
from shiftbench.tracking import scalar_metrics

log = logging.getLogger(__name__)
IDENTITY = ("model", "pretrain", "finetune", "seed")
KEYS = ("comparison_key", "protocol_key", "datasets", "source")  # written when any row has them
# Fields of a row that are never metric columns, even when None.
_NOT_METRICS = (*IDENTITY, *KEYS, *tracking.NOT_METRICS, "train_final", "heatmap", "location_map", "curve")


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
  """Columns and one list of values per row (None where a row lacks a value); lists as their JSON."""
  keys = [k for k in KEYS if any(r.get(k) not in (None, "") for r in rows)]
  from shiftbench.leaderboard import differing_settings  # the leaderboard imports this module

  settings = [r.get("comparison") or {} for r in rows]
  names = differing_settings(
    [{"model": r["model"], "protocol_key": r.get("protocol_key"), "settings": s} for r, s in zip(rows, settings)]
  )
  metrics = [_metrics(r) for r in rows]
  metric_names = [m for m in dict.fromkeys(k for ms in metrics for k in ms) if m not in KEYS]
  columns = [*IDENTITY, *keys, *names, *metric_names]
  out = []
  for r, s, m in zip(rows, settings, metrics):
    values = [
      *(r.get(k) for k in IDENTITY),
      *(r.get(k) for k in keys),
      *(s.get(n) for n in names),
      *(m.get(k) for k in metric_names),
    ]
    out.append([v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v) for v in values])
  return columns, out


def _metrics(row: dict[str, Any]) -> dict[str, Any]:
  """The row's scalar metrics in the row's order, an undefined one (None) kept as None: a metric undefined
  in every row (invariance at chance) is still a column."""
  flat = scalar_metrics(row)
  out: dict[str, Any] = {}
  for name, value in row.items():
    if value is None and name not in _NOT_METRICS:
      out[name] = None
    out.update({k: v for k, v in flat.items() if k == name or k.startswith(f"{name}/")})
  return out


def to_csv(columns: list[str], rows: list[list[Any]]) -> str:
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(columns)
  writer.writerows([["" if v is None else v for v in r] for r in rows])
  return buf.getvalue()


def write_rows(rows: list[dict[str, Any]], out_dir: str | os.PathLike) -> Path:
  """Writes `rows.csv` (and `rows.parquet` where pyarrow imports) into `out_dir`; returns the CSV path."""
  columns, values = table(rows)
  path = atomic_write_text(Path(out_dir) / "rows.csv", to_csv(columns, values))
  _write_parquet(columns, values, path.with_suffix(".parquet"))
  return path


def _write_parquet(columns: list[str], rows: list[list[Any]], path: Path) -> None:
  try:
    import pyarrow as pa
    import pyarrow.parquet as pq
  except ImportError:  # optional: the CSV is the record
    return
  data = {}
  for i, name in enumerate(columns):
    col = [r[i] for r in rows]
    kinds = {type(v) for v in col if v is not None}
    if len(kinds) > 1 and not kinds <= {int, float}:  # one type per parquet column: mixed ones as text
      col = [None if v is None else str(v) for v in col]
    data[name] = col
  tmp = path.with_name(f".{path.name}.tmp")
  try:
    pq.write_table(pa.table(data), tmp)
    os.replace(tmp, path)
  except (pa.ArrowException, OSError) as e:
    tmp.unlink(missing_ok=True)
    log.warning("rows.parquet not written (%s); rows.csv has the same table", e)
