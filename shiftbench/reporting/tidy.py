"""The tidy results table: one line per results row, for a researcher's own plots (pandas, seaborn, R).

`leaderboard.csv` is aggregated over seeds; `rows.csv` is not. Its columns, each field's as its declaration
(`shiftbench.rows.schema.ROW`) says:
  identity   the row's dimensions and seed (`shiftbench.rows.schema.IDENTITY`), then its key columns where rows
             carry them (`KEYS`: the comparison and protocol keys, the dataset pair and the source file);
  settings   every setting (dotted name, e.g. `canvas.size`) in which the rows' experiments differ, as the
             leaderboard shows them (`comparison.differing_settings`: protocol settings, and architecture
             settings between rows of one model name), so two runs that differ only in canvas size get a
             `canvas.size` column and nothing else;
  metrics    every number of any row whose field is shown as numbers (`shiftbench.rows.schema.scalar_metrics`:
             metrics, an `eval.metrics` evaluator's results included; per-layer similarity as
             `similarity_layers/<layer>`), empty where a row has none or it is undefined.
Written next to every leaderboard (each run, and `shiftbench-leaderboard`), as `rows.csv` and, since
pyarrow comes with tensorflow-datasets, `rows.parquet`. `shiftbench.reporting.tidy.load_rows` reads results back
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

from shiftbench.infra.files import atomic_write_text
from shiftbench.rows import comparison, fields, schema

log = logging.getLogger(__name__)
# The key columns after the identity, written when any row has them.
KEYS = tuple(n for n in schema.ROW.names() if schema.ROW.field(n).column == fields.KEY_COLUMN)


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
  """Columns and one list of values per row (None where a row lacks a value); lists as their JSON."""
  keys = [k for k in KEYS if any(r.get(k) not in (None, "") for r in rows)]
  settings = [r.get("comparison") or {} for r in rows]
  names = comparison.differing_settings(
    [{"model": r["model"], "protocol_key": r.get("protocol_key"), "settings": s} for r, s in zip(rows, settings)]
  )
  metrics = [_metrics(r) for r in rows]
  metric_names = [m for m in dict.fromkeys(k for ms in metrics for k in ms) if m not in KEYS]
  columns = [*schema.IDENTITY, *keys, *names, *metric_names]
  out = []
  for r, s, m in zip(rows, settings, metrics):
    values = [
      *(schema.dimension(r, k) for k in schema.IDENTITY),  # an older file's row as today's
      *(r.get(k) for k in keys),
      *(s.get(n) for n in names),
      *(m.get(k) for k in metric_names),
    ]
    out.append([v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v) for v in values])
  return columns, out


def _metrics(row: dict[str, Any]) -> dict[str, Any]:
  """The row's scalar metrics in the row's order, an undefined one (None) kept as None: a metric undefined
  in every row (invariance at chance) is still a column."""
  flat = schema.scalar_metrics(row)
  out: dict[str, Any] = {}
  for name, value in row.items():
    if value is None and name not in schema.NOT_METRICS:
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


def load_rows(paths: list[str | os.PathLike]) -> Any:
  """Every row of every `results.json` under `paths` (files or directories) as this module's table, a
  `pandas.DataFrame`: one line per results row, undefined values as NaN. Needs pandas (`pip install
  pandas`, or the `analysis` extra)."""
  try:
    import pandas as pd
  except ImportError as e:
    raise ImportError("shiftbench.reporting.tidy.load_rows returns a pandas DataFrame: pip install pandas") from e
  from shiftbench.rows import collect  # reading results files sits below this table

  columns, values = table(collect.collect(paths))
  return pd.DataFrame(values, columns=columns)
