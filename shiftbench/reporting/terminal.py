"""What a run and `shiftbench-leaderboard` print: the key columns and the claims, in a normal terminal.

The full leaderboard has ~20 columns and wraps in any terminal, so only the columns that carry the
result are printed (plus whatever tells groups apart, e.g. the dataset pair or a differing setting), the
claims in one short line each, and where the full tables are.
"""

from __future__ import annotations

import os
from pathlib import Path

from tabulate import tabulate

from shiftbench.claims import catalogue as claims_lib
from shiftbench.claims import listing
from shiftbench.reporting import methods_board, stopping
from shiftbench.rows import schema

# The method and its setting print as one column, `method` (`schema.method_label`: plain, lpft, wise0.5,
# l2sp0.01); leaderboard.md keeps both.
METHOD_COLUMNS = (schema.METHOD, schema.SETTING)
METHOD = "method"
# The metrics that carry the result. off_acc is left to leaderboard.md (invariance is made of it): with the
# rate column, every key line fits in 100 characters.
KEY_METRICS = ("in_acc", "invariance", "invariance_lost")
KEY_COLUMNS = (
  *(METHOD if c == schema.METHOD else c for c in schema.DIMENSIONS if c != schema.SETTING),
  "seeds",
  *(schema.METRICS[m] for m in KEY_METRICS),  # the leaderboard's columns: their headers
)
# The dimensions' short headers (`schema.DIMENSION_HEADERS`, via the row's declaration).
HEADERS = {c: schema.ROW.header(c) for c in schema.DIMENSIONS if schema.ROW.header(c) != c}
COMPARED_WIDTH = 36  # with EFFECT_WIDTH and the rate, keeps a claims line under ~100 characters
EFFECT_WIDTH = 26  # a mean and interval fit; "; 1 of 5 seeds collapsed" wraps


def key_table(columns: list[str], rows: list[list], metric_columns: set[str]) -> str:
  """The leaderboard's key columns, and every column that is not a metric (the groups' identity)."""
  columns, rows = method_column(columns, rows)
  keep = [i for i, c in enumerate(columns) if c in KEY_COLUMNS or (c not in metric_columns and c != "params")]
  return tabulate(
    [[r[i] for i in keep] for r in rows],
    headers=[HEADERS.get(columns[i], columns[i]) for i in keep],
    tablefmt="simple",
    disable_numparse=True,
  )


def method_column(columns: list[str], rows: list[list]) -> tuple[list[str], list[list]]:
  """The method and method setting columns as one `method` column where the first was."""
  if not all(c in columns for c in METHOD_COLUMNS):
    return columns, rows
  at, setting = (columns.index(c) for c in METHOD_COLUMNS)

  def label(r: list) -> str:
    return schema.method_label(str(r[at]), None if r[setting] in (None, "", "-") else float(r[setting]))

  out_columns = [METHOD if i == at else c for i, c in enumerate(columns) if i != setting]
  out_rows = [[label(r) if i == at else v for i, v in enumerate(r) if i != setting] for r in rows]
  return out_columns, out_rows


TERMINAL_STATS = ("in_acc", "off_acc", "invariance")  # the methods' endpoints, then the ratio (secondary)

# Under each section's claims: its heading.
SECTION_TITLES = {at: f"{h[0].lower()}{h[1:]}:\n" for at, h in listing.HEADINGS.items()}


def claims_table(claims: list) -> str:
  """id, rate, verdict, effect, n and what was compared, as every output lists the claims (`claims.listing`):
  their wording is in leaderboard.md. Secondary entries (`↳ C3b`) follow their primary one, labelled; the
  methods' claims and the property checks follow the replications, each under its own line. Claims of
  several comparable groups (`[key setting=value] compared`) get one section per group. Claims whose rows
  the run lacks are named on one line per what runs them."""
  report = listing.listing(claims_lib.ordered(claims))
  out = []
  for label in report.groups():
    blocks = [b for b in report.blocks if b.label == label]
    tables = [SECTION_TITLES.get(b.section, "") + _claim_lines([_claim_line(c) for c in b.claims()]) for b in blocks]
    if report.not_run_lines(label):
      tables.append("\n".join(report.not_run_lines(label)))
    out.append((f"[{label}]\n" if label else "") + "\n\n".join(tables))
  return "\n\n".join(out)


def _claim_line(c) -> list:
  what = listing.compared(c) if c.primary else f"secondary: {listing.compared(c)}"
  return [listing.shown_id(c), listing.rate(c), c.verdict, c.effect, c.n, what]


def _claim_lines(rows: list[list]) -> str:
  return tabulate(
    rows,
    headers=["id", "lr", "verdict", "effect, mean [CI]", "n", "compared"],
    tablefmt="simple",
    maxcolwidths=[None, None, None, EFFECT_WIDTH, None, COMPARED_WIDTH],
    disable_numparse=True,
  )


def methods_tables(tables: list) -> str:
  """The methods board (`methods_board.Table`s) in short: one heading line and one line per method and
  setting (label, rank, in_acc, off_acc, and the invariance ratio, secondary); off_gain, retained, the
  validation numbers and the notes are in methods.md."""
  parts = []
  for t in tables:
    lines = [
      [x.method + (" β*" if x.best_val else ""), "-" if x.rank is None else x.rank]
      + [methods_board.fmt(getattr(x, k), len(x.seeds)) for k in TERMINAL_STATS]
      for x in t.lines
    ]
    text = tabulate(lines, headers=["method", "rank", *TERMINAL_STATS], disable_numparse=True)
    parts.append(f"[{t.heading}]\n{text}")
  return "\n\n".join(parts)


def summary(board, out_dir: str | os.PathLike) -> str:
  """The printed summary of a `leaderboard.Board` whose files were written to `out_dir`: the key columns,
  the methods board where a row is a method's, where fine-tuning stopped where a row ran under the stopping
  rule, and the claims."""
  out = Path(out_dir)
  tables = getattr(board, "methods", [])
  bar = f"rank: by off_acc within {methods_board.ACCURACY_BAR} of plain full's in_acc; - below it"
  methods = f"Fine-tuning methods ({bar}):\n{methods_tables(tables)}\n\n" if tables else ""
  where = f"The methods board with validation numbers and β*: {out / 'methods.md'}\n" if tables else ""
  stops = getattr(board, "stopping", [])
  stopped = f"{stopping.terminal(stops)}\n\n" if stops else ""
  return (
    f"{key_table(board.columns, board.rows, set(schema.METRICS.values()))}\n\n{methods}{stopped}"
    f"Claims from the literature (shiftbench.claims):\n{claims_table(board.claims)}\n\n{where}"
    f"Every column and the claims' wording: {out / 'leaderboard.md'} (also .csv, .json, index.html)\n"
    f"One line per row (every metric, every setting that differs): {out / 'rows.csv'}"
  )
