"""The methods' Pareto figure (methods_pareto.png): in-location against off-location accuracy, one panel per
methods table (`methods_board`)."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

from shiftbench.claims import methods as methods_claims
from shiftbench.reporting import methods_board, plots

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
      text = x.method + (f" {methods_claims.CHOSEN.get(x.finetune_method, '*')}" if x.best_val else "")
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
  return plots.save_figure(methods_figure(tables), path, bbox_inches="tight")
