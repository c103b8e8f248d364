"""The figure grids' layout, shared by the location-map grid (`map_grid`) and the forgetting curves
(`curves`): which entries they draw, their columns (pretrain regime / fine-tune mode), where each panel
sits, and how a figure is saved for the page."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from shiftbench.reporting import plots
from shiftbench.rows import schema
from shiftbench.rows.schema import FINETUNE_MODES, PRETRAIN_REGIMES


def plain(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The plain fine-tunes' entries: what the location maps and forgetting curves draw (a method's entry is
  at `full` too, and the methods have their own figure, `pareto.methods_pareto`)."""
  return [e for e in entries if schema.is_plain(e)]


def regime_columns(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
  regimes = {r: i for i, r in enumerate(PRETRAIN_REGIMES)}
  modes = {m: i for i, m in enumerate(FINETUNE_MODES)}
  return sorted(
    {(e["pretrain"], e["finetune"]) for e in entries}, key=lambda c: (regimes.get(c[0], 99), modes.get(c[1], 99))
  )


class Panels:
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


def save_for_page(fig, path: str | os.PathLike) -> Path:
  """Saved at `plots.PNG_DPI`, for the page to show at `plots.shown_width` (every label at its size)."""
  return plots.save_figure(fig, path, bbox_inches="tight", dpi=plots.PNG_DPI)
