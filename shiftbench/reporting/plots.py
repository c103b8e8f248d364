"""Figures: location-map heatmaps on a fixed colour scale (chance to 1) so maps compare at a glance."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: runs on clusters and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_location_map(
  ax: plt.Axes,
  acc_map: np.ndarray,
  ys: np.ndarray,
  xs: np.ndarray,
  chance: float,
  location: tuple[int, int] | None = None,
  title: str = "",
) -> matplotlib.image.AxesImage:
  """Draws acc(p) over the grid, colour scale fixed to [chance, 1], with the fine-tune location marked."""
  im = ax.imshow(
    acc_map,
    vmin=chance,
    vmax=1.0,
    cmap="viridis",
    origin="upper",
    extent=(xs[0] - 0.5, xs[-1] + 0.5, ys[-1] + 0.5, ys[0] - 0.5) if len(xs) > 1 else None,
  )
  if location is not None:
    ax.plot(location[1], location[0], marker="x", color="red", markersize=8, mew=2)
  ax.set_xlabel("x (object top-left)")
  ax.set_ylabel("y")
  ax.set_title(title, fontsize=9)
  return im


def save_location_map(
  path: str | os.PathLike,
  acc_map: np.ndarray,
  ys: np.ndarray,
  xs: np.ndarray,
  chance: float,
  location: tuple[int, int] | None = None,
  title: str = "",
) -> Path:
  """Saves one heatmap PNG (written to a temp name and renamed, like every result file)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=100)
  im = plot_location_map(ax, acc_map, ys, xs, chance, location, title)
  fig.colorbar(im, ax=ax, label="accuracy")
  fig.tight_layout()
  return save_figure(fig, path)


def save_figure(fig, path: str | os.PathLike, **savefig: Any) -> Path:
  """Writes `fig` to `path` under a temp name and renames it (a reader never sees half a PNG), then
  closes it; `savefig` goes to `Figure.savefig` (e.g. bbox_inches="tight")."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp.png")
  fig.savefig(tmp, **savefig)
  plt.close(fig)
  os.replace(tmp, path)
  return path
