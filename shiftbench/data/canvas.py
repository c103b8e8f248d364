"""Placing objects on canvases, in pure `jnp`, so it runs inside jitted steps.

An object of size (h, w) is placed with its top-left corner at (y, x) on a zero (black) canvas of size
(H, W); valid locations are 0 <= y <= H - h and 0 <= x <= W - w (docs/metrics.md, Terms). Placement is
written as two 0/1 selection matrices, canvas = Ey @ object @ Ex^T, which is exact in float32, batches
over objects *and* locations without scatter, and runs at matmul speed on CPU and GPU.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from shiftbench.rows.schema import PLACEMENT_REGIMES as REGIMES


@dataclasses.dataclass(frozen=True)
class CanvasSpec:
  """Canvas and object geometry, plain Python so it can be closed over by jitted code."""

  canvas_size: int
  object_size: int

  def __post_init__(self):
    if self.object_size < 1 or self.canvas_size < 1:
      raise ValueError(f"canvas_size and object_size must be positive, got {self.canvas_size}, {self.object_size}")
    if self.object_size > self.canvas_size:
      raise ValueError(
        f"object_size={self.object_size} is larger than canvas_size={self.canvas_size}; "
        "an object must fit inside the canvas"
      )

  @property
  def max_offset(self) -> int:
    """Largest valid top-left coordinate along either axis."""
    return self.canvas_size - self.object_size

  def check_location(self, location: tuple[int, int]) -> tuple[int, int]:
    y, x = (int(v) for v in location)
    if not (0 <= y <= self.max_offset and 0 <= x <= self.max_offset):
      raise ValueError(
        f"location {(y, x)} puts the object off the canvas; valid top-left coordinates are "
        f"0..{self.max_offset} per axis (canvas {self.canvas_size}, object {self.object_size})"
      )
    return y, x

  def center(self) -> tuple[int, int]:
    return self.max_offset // 2, self.max_offset // 2


def selection_matrix(offset: jax.Array, object_size: int, canvas_size: int) -> jax.Array:
  """E with E[i, j] = 1 iff canvas row i shows object row j, i.e. i == offset + j. Rows that `offset`
  puts off the canvas (negative, or past its end) have no 1: they are dropped."""
  rows = jnp.arange(canvas_size)[:, None]
  cols = jnp.arange(object_size)[None, :]
  return (rows == offset + cols).astype(jnp.float32)


def place(objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
  """Places each object on its own canvas.

  Args:
    objects: (B, h, w, C) float array (any leading batch shape works, see `place_grid`).
    locations: (B, 2) int array of top-left (y, x), assumed valid.
    canvas_size: side of the square canvas.

  Returns:
    (B, canvas_size, canvas_size, C) float32 canvases.
  """
  h, w = objects.shape[-3], objects.shape[-2]
  sel = jax.vmap(selection_matrix, in_axes=(0, None, None))
  ey = sel(locations[:, 0], h, canvas_size)  # (B, H, h)
  ex = sel(locations[:, 1], w, canvas_size)  # (B, W, w)
  return jnp.einsum("bYy,byxc,bXx->bYXc", ey, objects.astype(jnp.float32), ex)


def place_grid(objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
  """Places every object at every location: (B, h, w, C), (L, 2) -> (L, B, H, W, C)."""
  h, w = objects.shape[-3], objects.shape[-2]
  sel = jax.vmap(selection_matrix, in_axes=(0, None, None))
  ey = sel(locations[:, 0], h, canvas_size)  # (L, H, h)
  ex = sel(locations[:, 1], w, canvas_size)  # (L, W, w)
  return jnp.einsum("lYy,byxc,lXx->lbYXc", ey, objects.astype(jnp.float32), ex)


def apply_on_grid(fn, objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
  """`fn` (a batch of canvases -> a batch of outputs) on every object at every location: (L, B, ...)."""
  x = place_grid(objects, locations, canvas_size)
  return fn(x.reshape(-1, *x.shape[2:])).reshape(*x.shape[:2], -1)


def sample_locations(
  key: jax.Array, batch: int, spec: CanvasSpec, regime: str, location: tuple[int, int], jitter: int = 0
) -> jax.Array:
  """Draws (batch, 2) training locations under a placement regime (docs/metrics.md, Terms).

  `fixed` always returns `location`, as a host (numpy) array: a constant the jitted step can specialise
  on (`models/object_first.py` then places with pads instead of gathers); `random_crop` adds uniform
  integer jitter in [-jitter, jitter] per axis and clips to the canvas (pad-and-crop kept inside the
  canvas); `translate` is uniform over every valid location.
  """
  if regime == "fixed":
    return np.broadcast_to(np.asarray(location, np.int32)[None, :], (batch, 2))
  base = jnp.asarray(location, jnp.int32)[None, :]
  if regime == "random_crop":
    offsets = jax.random.randint(key, (batch, 2), -jitter, jitter + 1)
    return jnp.clip(base + offsets, 0, spec.max_offset)
  if regime == "translate":
    return jax.random.randint(key, (batch, 2), 0, spec.max_offset + 1)
  raise ValueError(f"unknown placement regime {regime!r}; allowed: {', '.join(REGIMES)}")


def location_grid(spec: CanvasSpec, stride: int, include: tuple[int, int] | None = None) -> np.ndarray:
  """Every valid location with `stride` per axis, as an (L, 2) int32 array in row-major order.

  The last valid coordinate is always included so the far border is tested, and so is `include` (the
  fine-tune location) when given, so `acc(p_ft)` is read off the same map.
  """
  if stride < 1:
    raise ValueError(f"grid stride must be >= 1, got {stride}")
  axis = set(range(0, spec.max_offset + 1, stride)) | {spec.max_offset}
  ys, xs = set(axis), set(axis)
  if include is not None:
    y, x = spec.check_location(include)
    ys.add(y)
    xs.add(x)
  grid = [(y, x) for y in sorted(ys) for x in sorted(xs)]
  return np.asarray(grid, np.int32)


def grid_axes(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The sorted distinct y and x coordinates of a row-major grid, for reshaping a map to 2-D."""
  return np.unique(grid[:, 0]), np.unique(grid[:, 1])
