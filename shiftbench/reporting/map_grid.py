"""The location-map grid (location_maps.png): models (rows) x pretrain regime / fine-tune mode (columns) of
seed-mean location maps."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from shiftbench.reporting import plots
from shiftbench.reporting.layout import Panels, plain, regime_columns, save_for_page
from shiftbench.rows.schema import LR, format_lr


def location_map_figure(entries: list[dict[str, Any]]):
  """Models (rows) x pretrain regime / fine-tune mode (columns) of seed-mean location maps of plain
  fine-tunes, each at the highest fine-tune rate it ran at (the most forgetting; the title says which
  rate); a model's columns wrap onto more lines where they would not fit the page (`layout.Panels`)."""
  entries = [e for e in plain(entries) if e.get("location_map")] or plain(entries)  # reference rows have none
  models = sorted({e["model"] for e in entries})
  cols = regime_columns(entries)
  by_key: dict[tuple, dict[str, Any]] = {}
  for e in entries:
    key = (e["model"], e["pretrain"], e["finetune"])
    if key not in by_key or (e.get(LR) or 0) > (by_key[key].get(LR) or 0):
      by_key[key] = e
  panels = Panels(models, cols, width=2.6, height=2.8, margin=1.0)
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
  return save_for_page(location_map_figure(entries), path)


def _rate(e: dict[str, Any]) -> str:
  return f"lr {format_lr(e[LR])} | " if e.get(LR) is not None else ""


def _num(v: float | None) -> str:
  return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"
