"""Placement: exact pixels against a NumPy reference, regimes, grids and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shiftbench.data import canvas


def _numpy_place(obj: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
  out = np.zeros((size, size, obj.shape[-1]), np.float32)
  out[y : y + obj.shape[0], x : x + obj.shape[1]] = obj
  return out


def test_place_matches_numpy_reference_exactly():
  rng = np.random.default_rng(0)
  objs = rng.random((6, 5, 4, 2)).astype(np.float32)
  locs = np.array([[0, 0], [0, 7], [6, 0], [6, 7], [3, 2], [1, 5]], np.int32)
  got = np.asarray(canvas.place(jnp.asarray(objs), jnp.asarray(locs), 11))
  want = np.stack([_numpy_place(o, y, x, 11) for o, (y, x) in zip(objs, locs)])
  np.testing.assert_array_equal(got, want)  # exact: placement is a 0/1 selection


def test_place_grid_is_every_object_at_every_location():
  rng = np.random.default_rng(1)
  objs = (rng.random((3, 4, 4, 1)) * 255).astype(np.float32)
  locs = np.array([[0, 0], [2, 5], [5, 5]], np.int32)
  got = np.asarray(canvas.place_grid(jnp.asarray(objs), jnp.asarray(locs), 9))
  assert got.shape == (3, 3, 9, 9, 1)
  for li, (y, x) in enumerate(locs):
    for oi, o in enumerate(objs):
      np.testing.assert_array_equal(got[li, oi], _numpy_place(o, y, x, 9))


def test_place_under_jit_equals_eager():
  objs = jnp.arange(2 * 3 * 3, dtype=jnp.float32).reshape(2, 3, 3, 1)
  locs = jnp.array([[1, 2], [4, 0]])
  np.testing.assert_array_equal(jax.jit(canvas.place, static_argnums=2)(objs, locs, 7), canvas.place(objs, locs, 7))


@pytest.mark.parametrize("regime,jitter", [("fixed", 0), ("random_crop", 2), ("translate", 0)])
def test_sample_locations_stay_in_their_regime(regime, jitter):
  spec = canvas.CanvasSpec(20, 8)
  base = (5, 9)
  locs = np.asarray(canvas.sample_locations(jax.random.key(0), 4000, spec, regime, base, jitter))
  assert locs.min() >= 0 and locs.max() <= spec.max_offset
  dist = np.abs(locs - np.array(base)).max(axis=1)
  if regime == "fixed":
    assert (dist == 0).all()
  elif regime == "random_crop":
    assert dist.max() == jitter
    assert len({tuple(v) for v in locs}) == (2 * jitter + 1) ** 2  # every jittered location occurs
  else:
    assert len({tuple(v) for v in locs}) == (spec.max_offset + 1) ** 2  # uniform over the whole canvas


def test_random_crop_is_clipped_inside_the_canvas():
  spec = canvas.CanvasSpec(10, 8)  # max offset 2
  locs = np.asarray(canvas.sample_locations(jax.random.key(1), 500, spec, "random_crop", (0, 2), 3))
  assert locs.min() == 0 and locs.max() == 2


def test_grid_includes_far_border_and_the_finetune_location():
  spec = canvas.CanvasSpec(20, 8)  # offsets 0..12
  grid = canvas.location_grid(spec, 5, include=(6, 7))
  ys, xs = canvas.grid_axes(grid)
  assert ys.tolist() == [0, 5, 6, 10, 12] and xs.tolist() == [0, 5, 7, 10, 12]
  assert len(grid) == 25 and [6, 7] in grid.tolist()
  assert len(canvas.location_grid(spec, 1)) == 13 * 13


def test_bad_geometry_and_locations_fail_with_clear_messages():
  with pytest.raises(ValueError, match="object_size=30 is larger than canvas_size=20"):
    canvas.CanvasSpec(20, 30)
  spec = canvas.CanvasSpec(20, 8)
  with pytest.raises(ValueError, match=r"location \(13, 0\) puts the object off the canvas.*0..12"):
    spec.check_location((13, 0))
  with pytest.raises(ValueError, match="unknown placement regime 'jitter'"):
    canvas.sample_locations(jax.random.key(0), 2, spec, "jitter", (0, 0))
