"""Leaderboard rendering: the figure grid of location maps, the forgetting curves, the methods' Pareto figure
(accuracy against invariance, `shiftbench.reporting.methods_board`), and one self-contained HTML page that
leads with what ran, the headline figure (`shiftbench.reporting.headline`: invariance against the fine-tune
rate) and the claims (its sections: `shiftbench.reporting.sections`), then sortable tables and the figures
embedded as base64 PNG."""

from __future__ import annotations

import base64
import html
import itertools
import math
import os
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.lines
import numpy as np

from shiftbench.claims import catalogue as claims_lib
from shiftbench.infra.files import atomic_write_text
from shiftbench.reporting import headline, methods_board, plots, provenance, reference_board, sections
from shiftbench.rows import reference, schema
from shiftbench.rows.schema import FINETUNE_MODES, LR, PRETRAIN_REGIMES, format_lr

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


def plain(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The plain fine-tunes' entries: what the location maps and forgetting curves draw (a method's entry is
  at `full` too, and the methods have their own figure, `methods_pareto`)."""
  return [e for e in entries if schema.is_plain(e)]


def _regime_columns(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
  regimes = {r: i for i, r in enumerate(PRETRAIN_REGIMES)}
  modes = {m: i for i, m in enumerate(FINETUNE_MODES)}
  return sorted(
    {(e["pretrain"], e["finetune"]) for e in entries}, key=lambda c: (regimes.get(c[0], 99), modes.get(c[1], 99))
  )


class _Panels:
  """Where each (model, column) panel of a figure sits: one model's columns on one line, wrapped onto as
  many lines as it takes to keep the figure `plots.PAGE_WIDTH` wide at most (each panel is titled with its
  model and column, so a wrapped line still says what it shows). `width` and `height` are one panel's, in
  inches; `margin` the width beside the panels (a colour bar)."""

  def __init__(self, models: list[str], cols: list, width: float, height: float, margin: float = 0.0) -> None:
    self.per_line = max(1, min(len(cols), math.floor((plots.PAGE_WIDTH - margin) / width + 1e-9)))
    self.lines = math.ceil(len(cols) / self.per_line) if cols else 1
    self.figsize = (width * self.per_line + margin, height * self.lines * max(len(models), 1))
    self.shape = (self.lines * max(len(models), 1), self.per_line)

  def at(self, model_index: int, col_index: int) -> tuple[int, int]:
    """The panel's (row, column) in the figure's grid of axes."""
    return model_index * self.lines + col_index // self.per_line, col_index % self.per_line

  def unused(self, axes: np.ndarray, models: list[str], cols: list) -> list:
    """The slots no panel takes (after the last column of a model's wrapped line)."""
    taken = {self.at(i, j) for i in range(len(models)) for j in range(len(cols))}
    return [axes[r, c] for r in range(axes.shape[0]) for c in range(axes.shape[1]) if (r, c) not in taken]


def location_map_figure(entries: list[dict[str, Any]]):
  """Models (rows) x pretrain regime / fine-tune mode (columns) of seed-mean location maps of plain
  fine-tunes, each at the highest fine-tune rate it ran at (the most forgetting; the title says which
  rate); a model's columns wrap onto more lines where they would not fit the page (`_Panels`)."""
  entries = [e for e in plain(entries) if e.get("location_map")] or plain(entries)  # reference rows have none
  models = sorted({e["model"] for e in entries})
  cols = _regime_columns(entries)
  by_key: dict[tuple, dict[str, Any]] = {}
  for e in entries:
    key = (e["model"], e["pretrain"], e["finetune"])
    if key not in by_key or (e.get(LR) or 0) > (by_key[key].get(LR) or 0):
      by_key[key] = e
  panels = _Panels(models, cols, width=2.6, height=2.8, margin=1.0)
  fig = plots.new_figure(figsize=panels.figsize, layout="constrained", dpi=plots.DISPLAY_DPI)
  axes = fig.subplots(*panels.shape, squeeze=False)
  for ax in panels.unused(axes, models, cols):
    ax.axis("off")
  image = None
  for i, model in enumerate(models):
    for j, (regime, mode) in enumerate(cols):
      ax, e = axes[panels.at(i, j)], by_key.get((model, regime, mode))
      if e is None or not e.get("location_map"):
        ax.axis("off")
        continue
      m = e["location_map"]
      loc = e.get("finetune_location")
      image = plots.plot_location_map(
        ax,
        np.asarray(m["acc"], float),
        np.asarray(m["ys"]),
        np.asarray(m["xs"]),
        e.get("chance") or 0.0,
        tuple(loc) if loc else None,
        # Three short lines: one line of all three, at 9 pt, ran into the next panel's title.
        f"{model}\n{regime} | {mode}\n{_rate(e)}inv {_num(e['invariance'][0])}",
      )
      ax.set_xlabel("")
      ax.set_ylabel("")
  if image is not None:
    fig.colorbar(image, ax=axes, label="accuracy", shrink=0.8)
  return fig


def location_map_grid(entries: list[dict[str, Any]], path: str | os.PathLike) -> Path:
  """`location_map_figure` saved to `path` (location_maps.png), for the page at its display size."""
  return _save_for_page(location_map_figure(entries), path)


CURVE_YLIM = (-0.2, 1.2)
# The curve's steps: 0, the early points (10, 20, 50, 100: forgetting at a high rate happens there), then
# every `finetune.eval_every`; a symlog axis, linear up to 10, gives the early points room.
CURVE_TICKS = (0, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
_STYLES = ("-", "--", ":", "-.")
_CURVE_PANEL = 3.2  # inches: 4 panels a line fit the page (`_Panels`); each axis about 2.8 of them


def step_ticks(top: int, axis: float = _CURVE_PANEL - 0.5) -> list[int]:
  """The CURVE_TICKS up to `top` whose labels (`plots.SMALL` pt) have room on a symlog axis `axis` inches
  long: 0 and the powers of ten first, then 50, 500, ..., then 20, 200, ..., each only where it overlaps
  none already kept (a run of 20000 steps keeps the decades and few more)."""

  def at(t: int) -> float:  # the symlog scale's position: linear up to 10 over half a decade, then log10
    return t / 20 if t <= 10 else 0.5 + math.log10(t / 10)

  inches = axis / (1.1 * at(max(top, 10)))  # per unit of the scale; matplotlib's 5% margins at each end
  width = lambda t: len(str(t)) * plots.SMALL * 0.64 / 72  # noqa: E731 - a digit is about 0.64 em wide
  candidates = [t for t in CURVE_TICKS if t <= top]
  kept: list[int] = []
  for lead in ("0", "1", "5", "2"):
    for t in (c for c in candidates if str(c)[0] == lead):
      if all(abs(at(t) - at(k)) * inches >= (width(t) + width(k)) / 2 + 0.06 for k in kept):
        kept.append(t)
  return sorted(kept)


def forgetting_figure(entries: list[dict[str, Any]]):
  """Invariance over fine-tune steps (seed means): one panel per model (rows) and pretrain/mode (columns),
  one line per fine-tune rate (coloured by rate; line style by protocol group when there are several),
  a step-0 point taken from the `last` row's probe drawn as a hollow diamond, and points whose mean
  in-location accuracy is near chance (`plots.near_chance`) as hollow circles. One legend for all.
  Plain fine-tunes only: a method's line would share plain full's panel."""
  entries = [e for e in plain(entries) if e.get("curve")]
  models = list(dict.fromkeys(e["model"] for e in entries))
  cols = _regime_columns(entries)
  rates = sorted({e[LR] for e in entries if e.get(LR) is not None})
  colours = {lr: matplotlib.colormaps["viridis"](0.9 * i / max(len(rates) - 1, 1)) for i, lr in enumerate(rates)}
  groups = {e.get("protocol_key", ""): e.get("settings") or {} for e in entries}
  styles = {g: _STYLES[i % len(_STYLES)] for i, g in enumerate(groups)}
  panels = _Panels(models, cols, width=_CURVE_PANEL, height=2.8, margin=0.6)
  width, height = panels.figsize
  fig = plots.new_figure(figsize=(width, height + 0.8), dpi=plots.DISPLAY_DPI, layout="constrained")
  axes = fig.subplots(*panels.shape, squeeze=False)
  for ax in panels.unused(axes, models, cols):
    ax.axis("off")
  probed = marked = False
  for (i, model), (j, (regime, mode)) in itertools.product(enumerate(models), enumerate(cols)):
    ax = axes[panels.at(i, j)]
    panel = [e for e in entries if (e["model"], e["pretrain"], e["finetune"]) == (model, regime, mode)]
    if not panel:
      ax.axis("off")
      continue
    for e in panel:
      colour, style = colours.get(e.get(LR), "C0"), styles[e.get("protocol_key", "")]
      steps = [p["step"] for p in e["curve"]]
      values = [np.nan if p["invariance"] is None else np.clip(p["invariance"], *CURVE_YLIM) for p in e["curve"]]
      near = [plots.near_chance(p.get("in_acc"), e.get("chance")) for p in e["curve"]]
      filled = [i for i, n in enumerate(near) if not n]
      ax.plot(steps, values, marker="o", markersize=3, color=colour, linestyle=style, markevery=filled)
      hollow = [(s, v) for s, v, n in zip(steps, values, near) if n and not np.isnan(v)]
      if hollow:
        ax.plot(*zip(*hollow), linestyle="none", marker="o", markersize=5, mfc="white", mec=colour, mew=1.2)
        marked = True
      probe = [(s, v) for s, v, p in zip(steps, values, e["curve"]) if p.get("from") == "probe"]
      if probe:
        ax.plot(*zip(*probe), linestyle="none", marker="D", markersize=7, mfc="none", mec=colour)
        probed = True
    ax.set_xscale("symlog", linthresh=10, linscale=0.5)
    ticks = step_ticks(max(p["step"] for e in panel for p in e["curve"]))
    ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=plots.SMALL)
    ax.minorticks_off()
    ax.set_title(f"{model} | {regime}/{mode}", fontsize=9)
    ax.set_xlabel("fine-tune step")
    # One fixed range for every panel: an outlier (a score just defined over a tiny denominator) must not
    # stretch one panel's scale; points outside are clipped at the edge.
    ax.set_ylim(*CURVE_YLIM)
    ax.axhline(0.0, color="grey", linewidth=0.5)
  for row in axes:
    row[0].set_ylabel("invariance score")
  # One legend under the grid (one per panel hid the early points): colour = rate, style = protocol.
  line = matplotlib.lines.Line2D
  handles = [line([], [], color=c, marker="o", markersize=3, label=f"lr {format_lr(lr)}") for lr, c in colours.items()]
  if len(groups) > 1:
    handles += [
      line([], [], color="black", linestyle=styles[g], label=f"{g}: {headline.protocol_title(s)}")
      for g, s in groups.items()
    ]
  if probed:
    handles.append(
      line([], [], linestyle="none", marker="D", mfc="none", mec="black", label="step 0: the last row's probe")
    )
  if marked:
    handles.append(line([], [], linestyle="none", marker="o", mfc="white", mec="black", label=plots.NEAR_CHANCE_LABEL))
  if handles:
    _legend_within(fig, handles)
  return fig


def _legend_within(fig, handles: list) -> None:
  """One legend under the figure, in as many columns (4 at most) as fit its width: a wider legend would
  widen the saved PNG past the page."""
  renderer = fig.canvas.get_renderer()
  for ncols in range(min(len(handles), 4), 0, -1):
    legend = fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=plots.SMALL, frameon=False)
    if ncols == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width:
      return
    legend.remove()


def forgetting_curves(entries: list[dict[str, Any]], path: str | os.PathLike) -> Path:
  """`forgetting_figure` saved to `path` (forgetting_curves.png), for the page at its display size."""
  return _save_for_page(forgetting_figure(entries), path)


# The Pareto figure's colours: plain rows by mode, in greys; a method its own (`Method.colour`, which
# reaches here as its rows' `method_info`), or the default cycle's next for one without (or an older file's).
PLAIN_COLOURS = {"plain last": "#1f1f1f", "plain head": "#6f6f6f", "plain full": "#a8a8a8"}


def _half(s: methods_board.Stat) -> float:
  return 0.0 if s.lo is None else (s.hi - s.lo) / 2


def methods_figure(tables: list[methods_board.Table]):
  """In-location accuracy (x) against off-location accuracy (y), the methods' two endpoints, neither made
  of the other: one panel per methods table (model, regime, rate, protocol), one point per method and
  setting with its 95% t-interval on both axes, labelled; a gridded method's points (WiSE-FT's, L2-SP's)
  joined in setting order; plain full's accuracy bar (its mean in_acc - ACCURACY_BAR) dashed, and its
  off_acc + δ dotted (what a line must clear to keep more). A line without off_acc has no point."""
  cols = min(len(tables), 3)
  rows = math.ceil(len(tables) / cols)
  fig = plots.new_figure(figsize=(4.8 * cols, 4.2 * rows), dpi=90, layout="constrained")
  axes = fig.subplots(rows, cols, squeeze=False)
  others = iter(f"C{i}" for i in itertools.count(4))
  colours = dict(PLAIN_COLOURS)
  for ax, table in zip(axes.ravel(), tables):
    shown = [x for x in table.lines if x.in_acc.mean is not None and x.off_acc.mean is not None]
    for x in shown:
      key = x.method if x.plain else x.finetune_method
      if key not in colours:
        colours[key] = x.info.colour or next(others)
      colour = colours[key]
      y = x.off_acc.mean
      ax.errorbar(
        x.in_acc.mean, y, xerr=_half(x.in_acc), yerr=_half(x.off_acc), fmt="o", color=colour, markersize=4,
        capsize=2, elinewidth=0.8,
      )  # fmt: skip
      text = x.method + (" β*" if x.best_val else "")
      ax.annotate(text, (x.in_acc.mean, y), xytext=(3, 3), textcoords="offset points", fontsize=6, color=colour)
    gridded = dict.fromkeys(x.finetune_method for x in shown if not x.plain and x.method_setting is not None)
    for name in gridded:
      path = sorted((x for x in shown if x.finetune_method == name), key=lambda x: x.method_setting or 0.0)
      if len(path) > 1:
        xs, ys = [x.in_acc.mean for x in path], [x.off_acc.mean for x in path]
        info = path[0].info
        label = f"{info.title}, {info.setting_symbol or 'setting'} ascending"
        ax.plot(xs, ys, color=colours[name], linewidth=1, alpha=0.7, label=label)
    if table.bar is not None:
      bar_label = f"accuracy bar (plain full - {methods_board.ACCURACY_BAR})"
      ax.axvline(table.bar, color="grey", linestyle="--", linewidth=1, label=bar_label)
    full = table.line("plain full")
    if full is not None and full.off_acc.mean is not None:
      label = f"plain full's off_acc + δ ({methods_board.SMALLEST_EFFECT})"
      edge = full.off_acc.mean + methods_board.SMALLEST_EFFECT
      ax.axhline(edge, color="grey", linestyle=":", linewidth=1, label=label)
    ax.set_ylim(0.0, 1.02)
    ax.set_title(table.heading.replace(" · protocol", "\nprotocol"), fontsize=8)
    ax.set_xlabel("in-location accuracy")
    ax.set_ylabel("off-location accuracy", fontsize=8)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=6, loc="lower left", frameon=False)
  for ax in axes.ravel()[len(tables) :]:
    ax.axis("off")
  return fig


def methods_pareto(tables: list[methods_board.Table], path: str | os.PathLike) -> Path:
  """`methods_figure` saved to `path` (methods_pareto.png)."""
  return _save(methods_figure(tables), path)


def _rate(e: dict[str, Any]) -> str:
  return f"lr {format_lr(e[LR])} | " if e.get(LR) is not None else ""


def _num(v: float | None) -> str:
  return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _save(fig, path: str | os.PathLike) -> Path:
  return plots.save_figure(fig, path, bbox_inches="tight")


def _save_for_page(fig, path: str | os.PathLike) -> Path:
  """Saved at `plots.PNG_DPI`, for the page to show at `plots.shown_width` (every label at its size)."""
  return plots.save_figure(fig, path, bbox_inches="tight", dpi=plots.PNG_DPI)


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
    f"full's, paired by seed; above δ = {methods_board.SMALLEST_EFFECT} a ranked line keeps more. Invariance "
    "and <code>retained</code> (invariance / plain last's, per seed) are secondary: the ratio rises whenever "
    "in-location accuracy falls. β*: L2-SP under Adam's β chosen on B's validation split (claim M3). Also in "
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
) -> str:
  """One HTML document that leads with the answer: what ran (`ran`, `provenance.what_ran`), the headline
  figure (`top`), the claims (`sections.claims_table`), the methods board (`methods`, a section from
  `methods_section`; none without method rows), then the leaderboard (`sections.board_tables`: tables that fit a
  1400-px window; click a header to sort), then the other figures inlined as base64 PNG, each shown at the
  size it was drawn for (`plots.shown_width`)."""
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
    f"{'' if top is None else sections.headline_section(top)}{claims_html}{methods}"
    "<h2>Leaderboard</h2>\n<p>Mean ± std over seeds ((n=k): the metric is defined on k seeds). Click a column "
    "header to sort. Columns are defined in shiftbench's docs/metrics.md; leaderboard.csv has every column "
    f"in one table.</p>\n{note}{boards}\n"
    f"{figs}\n<script>{_SORT_JS}</script>\n</body></html>\n"
  )


def write_report(board, out_dir: str | os.PathLike) -> Path:
  """Writes `headline.png` and `headline.svg` (when the rows span 2 or more fine-tune rates),
  `methods_pareto.png` (when a row is a method's), `location_maps.png`, `forgetting_curves.png` and
  `index.html` into `out_dir`; the page's header reads the results files behind the rows
  (`provenance.records_of`)."""
  out_dir = Path(out_dir)
  tables = getattr(board, "methods", [])
  if tables:
    methods = methods_section(tables, methods_pareto(tables, out_dir / "methods_pareto.png"))
  else:  # as headline.png: an earlier board's figure would contradict this one
    (out_dir / "methods_pareto.png").unlink(missing_ok=True)
    methods = ""
  figures = {}
  top = headline.save_headline(board.source_rows, claims_lib.to_json(board.claims), out_dir / "headline.png")
  if top is None:  # one rate: no curve; a headline left by an earlier board would contradict this one
    (out_dir / "headline.png").unlink(missing_ok=True)
    (out_dir / "headline.svg").unlink(missing_ok=True)
  figures["Location maps (models x pretrain / fine-tune)"] = location_map_grid(
    board.entries, out_dir / "location_maps.png"
  )
  if any(e.get("curve") for e in plain(board.entries)):
    figures["Invariance over fine-tune steps"] = forgetting_curves(board.entries, out_dir / "forgetting_curves.png")
  own = [r for r in board.source_rows if not reference.is_reference(r)]  # what ran here: not the reference rows
  ran = provenance.what_ran(provenance.records_of(own, out_dir), own)
  note = reference_board.page_note(board.entries)  # which lines are shipped reference rows
  page = render_html(board.columns, board.rows, figures, TITLE, board.claims, methods, ran, top, note)
  return atomic_write_text(out_dir / "index.html", page)
