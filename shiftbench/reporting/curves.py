"""The forgetting curves (forgetting_curves.png): invariance over fine-tune steps, one panel per model and
pretrain regime / fine-tune mode, one line per rate."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.lines
import numpy as np

from shiftbench.reporting import headline, plots
from shiftbench.reporting.layout import Panels, plain, regime_columns, save_for_page
from shiftbench.rows.schema import LR, format_lr

CURVE_YLIM = (-0.2, 1.2)
# The curve's steps: 0, the early points (10, 20, 50, 100: forgetting at a high rate happens there), then
# every `finetune.eval_every`; a symlog axis, linear up to 10, gives the early points room.
CURVE_TICKS = (0, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
_STYLES = ("-", "--", ":", "-.")
_CURVE_PANEL = 3.2  # inches: 4 panels a line fit the page (`layout.Panels`); each axis about 2.8 of them


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
  cols = regime_columns(entries)
  rates = sorted({e[LR] for e in entries if e.get(LR) is not None})
  colours = {lr: matplotlib.colormaps["viridis"](0.9 * i / max(len(rates) - 1, 1)) for i, lr in enumerate(rates)}
  groups = {e.get("protocol_key", ""): e.get("settings") or {} for e in entries}
  styles = {g: _STYLES[i % len(_STYLES)] for i, g in enumerate(groups)}
  panels = Panels(models, cols, width=_CURVE_PANEL, height=2.8, margin=0.6)
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
  return save_for_page(forgetting_figure(entries), path)
