"""The report page: one self-contained HTML page that leads with what ran, the headline figure
(`shiftbench.reporting.headline`: invariance against the fine-tune rate) and the claims (its sections:
`shiftbench.reporting.sections`), then the methods board, sortable tables and the figures embedded as base64
PNG: the location-map grid (`map_grid`), the forgetting curves (`curves`) and the methods' Pareto figure
(`pareto`), each drawn in its own module."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

from shiftbench.claims import catalogue as claims_lib
from shiftbench.infra.files import atomic_write_text
from shiftbench.reporting import (
  curves,
  headline,
  layout,
  map_grid,
  methods_board,
  pareto,
  plots,
  provenance,
  reference_board,
  sections,
)
from shiftbench.rows import reference

# Clicking a header sorts by that column (numbers numerically, "0.812 ± 0.03" by its mean), again reverses.
_SORT_JS = """
document.querySelectorAll('table.board th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], asc = th.dataset.asc !== '1';
  const key = r => { const t = r.cells[col].textContent, v = parseFloat(t); return isNaN(v) ? t : v; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }).forEach(r => body.appendChild(r));
  th.closest('tr').querySelectorAll('th').forEach(h => delete h.dataset.asc);
  th.dataset.asc = asc ? '1' : '0';
}));
"""
_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{margin:0 0 .3em} table{border-collapse:collapse;font-size:12px} th,td{border:1px solid #ccc;padding:3px 6px}
th{background:#eee} table.ran{font-size:13px;margin-bottom:1em} table.ran th{text-align:left;white-space:nowrap}
table.ran td{font-family:monospace} figure{margin:0 0 1em} figcaption{font-size:13px;color:#444}
table.board td{text-align:right} table.board td:nth-child(-n+5){text-align:left;white-space:nowrap}
table.board th{cursor:pointer;user-select:none}
table.board th[data-asc='1']::after{content:' \\25B2'} table.board th[data-asc='0']::after{content:' \\25BC'}
table.claims{width:100%;table-layout:fixed} table.claims td{vertical-align:top;overflow-wrap:anywhere}
table.claims tr.secondary td{color:#555;font-size:11px;background:#fafafa}
table.claims tr.secondary td:first-child{padding-left:1.2em}
table.claims tr.section td{background:#f3f3f3;font-weight:bold} span.cite{color:#777}
td.pass{background:#d9f2d9;color:#1a6b1a;font-weight:bold} td.fail{background:#f8d7d7;color:#a11;font-weight:bold}
td.equivalent{background:#e4ecf7;color:#234;font-weight:bold}
td.other{color:#666} p.notrun{color:#555} img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}"""


def _img(path: Path, alt: str, width: int | None = None) -> str:
  data = base64.b64encode(path.read_bytes()).decode("ascii")
  shown = "" if width is None else f' width="{width}"'
  return f'<img alt="{html.escape(alt)}"{shown} src="data:image/png;base64,{data}">'


def methods_section(tables: list[methods_board.Table], figure: Path | None) -> str:
  """The methods board as a page section: what it shows, the Pareto figure, one table per group."""
  intro = (
    "<h2>Fine-tuning methods</h2>\n<p>Mean [95% t-interval] over seeds. Ranked by off-location accuracy (the "
    "primary endpoint) among the lines whose mean in-location accuracy is within "
    f"{methods_board.ACCURACY_BAR} of plain full's; lines below that bar are unranked (-): keeping accuracy "
    "away from the fine-tune location by not learning B is no win. <code>off_gain</code> = off_acc - plain "
    "full's, paired by seed, its interval widened by the test set's sampling error (a bootstrap over objects, "
    "as in the claims) where rows hold per-object results; above "
    f"δ = {methods_board.SMALLEST_EFFECT} a ranked line keeps more. Invariance and <code>retained</code> "
    "(invariance / plain last's, per seed) are secondary: the ratio rises whenever in-location accuracy falls. "
    "β*, ρ*, λ*: the setting chosen on B's validation split (claims M3-M5). Also in "
    "<code>methods.md</code>, <code>.csv</code>, <code>.json</code>.</p>\n"
  )
  img = "" if figure is None else f"{_img(figure, 'in-location against off-location accuracy, per method')}\n"
  parts = [
    f"<h3>{html.escape(t.heading)}</h3>\n<p>{html.escape(t.summary)}</p>\n"
    f"{sections.table(methods_board.COLUMNS, methods_board.rows(t))}\n"
    for t in tables
  ]
  return intro + img + "".join(parts)


TITLE = "shiftbench: how much translation invariance survives fine-tuning at one location"


def render_html(
  columns: list[str],
  rows: list[list[Any]],
  figures: dict[str, Path],
  title: str = TITLE,
  claims: list[claims_lib.Claim] | None = None,
  methods: str = "",
  ran: list[tuple[str, str]] | None = None,
  top: Path | None = None,
  note: str = "",
  stopping: str = "",
) -> str:
  """One HTML document that leads with the answer: what ran (`ran`, `provenance.what_ran`), the headline
  figure (`top`), the claims (`sections.claims_table`), the methods board (`methods`, a section from
  `methods_section`; none without method rows), where fine-tuning stopped (`stopping`, a section from
  `sections.stopping_section`; none without rows under the stopping rule), then the leaderboard
  (`sections.board_tables`: tables that fit a 1400-px window; click a header to sort), then the other figures
  inlined as base64 PNG, each shown at the size it was drawn for (`plots.shown_width`)."""
  ran_html = "" if not ran else f"<table class='ran'>{sections.ran_rows(ran)}</table>\n"
  figs = "\n".join(
    f"<h2>{html.escape(name)}</h2>\n{_img(p, name, plots.shown_width(p))}" for name, p in figures.items()
  )
  claims_html = (
    ""
    if claims is None
    else (
      "<h2>Claims from the literature</h2>\n<p>✓ supported: the interval over seeds lies beyond the "
      f"threshold by more than δ = {claims_lib.SMALLEST_EFFECT} on the claimed side (the smallest effect of "
      "interest; C1's and C8's thresholds have none); ✗ contradicted: beyond it on the other side; equivalent: "
      "inside ± δ (two one-sided tests); inconclusive: anything else, or a seed collapsed (counted against "
      "the claim). The interval is 95%, or wider where Holm's correction within the claim's family (its "
      "models and rates) lowered the entry's level: then the level follows it. One entry per claim, model and "
      "rate, as pre-registered; ↳ secondary entries (another comparison of the same rows) under it. Rules: "
      "docs/protocol.md.</p>\n"
      f"{sections.claims_table(claims)}\n"
    )
  )
  boards = "\n".join(
    f"<h3>{html.escape(t)}</h3>\n{sections.table(c, r)}" for t, c, r in sections.board_tables(columns, rows)
  )
  return (
    f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
    f"<style>{_CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{ran_html}"
    f"{'' if top is None else sections.headline_section(top)}{claims_html}{methods}{stopping}"
    "<h2>Leaderboard</h2>\n<p>Mean ± std over seeds ((n=k): the metric is defined on k seeds). Click a column "
    "header to sort. Columns are defined in shiftbench's docs/metrics.md; leaderboard.csv has every column "
    f"in one table.</p>\n{note}{boards}\n"
    f"{figs}\n<script>{_SORT_JS}</script>\n</body></html>\n"
  )


def write_report(board, out_dir: str | os.PathLike) -> Path:
  """Writes `headline.png` and `headline.svg` (when the rows span 2 or more fine-tune rates),
  `methods_pareto.png` (when a row is a method's), `location_maps.png`, `forgetting_curves.png` and
  `index.html` (with where fine-tuning stopped, when a row ran under the stopping rule) into `out_dir`; the
  page's header reads the results files behind the rows (`provenance.records_of`)."""
  out_dir = Path(out_dir)
  tables = getattr(board, "methods", [])
  if tables:
    methods = methods_section(tables, pareto.methods_pareto(tables, out_dir / "methods_pareto.png"))
  else:  # as headline.png: an earlier board's figure would contradict this one
    (out_dir / "methods_pareto.png").unlink(missing_ok=True)
    methods = ""
  figures = {}
  top = headline.save_headline(board.source_rows, claims_lib.to_json(board.claims), out_dir / "headline.png")
  if top is None:  # one rate: no curve; a headline left by an earlier board would contradict this one
    (out_dir / "headline.png").unlink(missing_ok=True)
    (out_dir / "headline.svg").unlink(missing_ok=True)
  figures["Location maps (models x pretrain / fine-tune)"] = map_grid.location_map_grid(
    board.entries, out_dir / "location_maps.png"
  )
  if any(e.get("curve") for e in layout.plain(board.entries)):
    figures["Invariance over fine-tune steps"] = curves.forgetting_curves(
      board.entries, out_dir / "forgetting_curves.png"
    )
  own = [r for r in board.source_rows if not reference.is_reference(r)]  # what ran here: not the reference rows
  ran = provenance.what_ran(provenance.records_of(own, out_dir), own)
  note = reference_board.page_note(board.entries)  # which lines are shipped reference rows
  stops = sections.stopping_section(getattr(board, "stopping", []))
  page = render_html(board.columns, board.rows, figures, TITLE, board.claims, methods, ran, top, note, stops)
  return atomic_write_text(out_dir / "index.html", page)
