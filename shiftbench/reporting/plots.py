"""Figures: location-map heatmaps on a fixed colour scale (chance to 1) so maps compare at a glance.

Every figure of the package is a plain `matplotlib.figure.Figure` on an Agg canvas (`new_figure`), never
pyplot's: pyplot keeps its figures in one global registry, and heatmaps are drawn from worker threads at
once. Nothing here selects a backend, so a notebook's own pyplot is left as it was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
  from matplotlib.axes import Axes
  from matplotlib.image import AxesImage

# Legible where the page (`reporting.page`) shows a figure: at DISPLAY_DPI CSS pixels per inch (96: one inch
# of figure is one inch of screen), so a point in the figure is a point on the page, and every text is at
# least SMALL pt. The PNG is drawn at PNG_DPI (1.5x, sharper on a high-density screen) and shown at its
# width x DISPLAY_DPI / PNG_DPI (`shown_width`). PAGE_WIDTH (inches at DISPLAY_DPI) is as wide as a figure may
# be drawn: inside the page's 1400-px column, where it is not scaled down.
SMALL = 9
DISPLAY_DPI, PNG_DPI = 96, 144
PAGE_WIDTH = 14.0


def shown_width(path: str | os.PathLike) -> int:
  """The width in CSS pixels at which the page shows a PNG drawn at PNG_DPI (1 pt of figure = 1 pt shown)."""
  width = int.from_bytes(Path(path).read_bytes()[16:20], "big")  # the IHDR chunk's width
  return round(width * DISPLAY_DPI / PNG_DPI)


# A point of a curve is near chance when its in-location accuracy is less than NEAR_CHANCE_SHARE of the way
# from chance to 1: in_acc < chance + 0.2 * (1 - chance), 0.28 for 10 classes. The invariance ratio
# (off - chance) / (in - chance) divides by almost nothing there and means nothing (1.1 at in_acc 0.19,
# chance 0.1, is noise, though in_acc is significantly above chance on 200 objects), so the figures draw
# such points hollow. A fifth, as C1's "near chance" (`claims.forgetting.NEAR_CHANCE`).
NEAR_CHANCE_SHARE = 0.2
NEAR_CHANCE_LABEL = "in-location accuracy near chance (< chance + 0.2·(1 − chance)): invariance means little"


def near_chance(in_acc: float | None, chance: float | None) -> bool:
  """Whether a point with in-location accuracy `in_acc` is near `chance` (the rule above); False when either
  is unknown."""
  if in_acc is None or chance is None or np.isnan(in_acc):
    return False
  return in_acc < chance + NEAR_CHANCE_SHARE * (1 - chance)


def new_figure(**kwargs: Any) -> Figure:
  """A figure that pyplot knows nothing of (`Figure(**kwargs)` on its own Agg canvas): safe to draw in one
  thread while another draws its own, and freed when it is no longer referenced (nothing to close)."""
  fig = Figure(**kwargs)
  FigureCanvasAgg(fig)
  return fig


def plot_location_map(
  ax: Axes,
  acc_map: np.ndarray,
  ys: np.ndarray,
  xs: np.ndarray,
  chance: float,
  location: tuple[int, int] | None = None,
  title: str = "",
) -> AxesImage:
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
  fig = new_figure(figsize=(4.2, 3.6), dpi=100)
  ax = fig.subplots()
  im = plot_location_map(ax, acc_map, ys, xs, chance, location, title)
  fig.colorbar(im, ax=ax, label="accuracy")
  fig.tight_layout()
  return save_figure(fig, path)


def save_figure(fig: Figure, path: str | os.PathLike, also: tuple[str, ...] = (), **savefig: Any) -> Path:
  """Writes `fig` (a `new_figure`) to `path` under a temp name and renames it (a reader never sees half a
  PNG), and to each suffix of `also` beside it (e.g. ".svg": the same figure as vectors); `savefig` goes to
  `Figure.savefig` (e.g. bbox_inches="tight")."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  for target in (path, *(path.with_suffix(s) for s in also)):
    tmp = target.with_name(f".{target.name}.tmp{target.suffix}")
    fig.savefig(tmp, **savefig)
    os.replace(tmp, target)
  return path
