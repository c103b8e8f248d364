"""Location-map metrics against their definitions (docs/metrics.md), with known answers."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from shiftbench.data import canvas
from shiftbench.evaluators import chunks, location_maps, metrics
from shiftbench.evaluators.predictor import Predictor


def test_off_location_mask_uses_per_axis_distance_beyond_the_jitter():
  grid = np.array([[0, 0], [0, 2], [2, 2], [3, 1], [5, 5]])
  np.testing.assert_array_equal(metrics.off_location_mask(grid, (2, 2), 0), [True, True, False, True, True])
  np.testing.assert_array_equal(metrics.off_location_mask(grid, (2, 2), 1), [True, True, False, False, True])


def test_invariance_score_known_answers():
  assert float(metrics.invariance_score(0.9, 0.9, 0.1)) == pytest.approx(1.0)
  assert float(metrics.invariance_score(0.9, 0.1, 0.1)) == pytest.approx(0.0)
  assert float(metrics.invariance_score(0.6, 0.35, 0.1)) == pytest.approx(0.5)
  assert np.isnan(float(metrics.invariance_score(0.1, 0.5, 0.1)))  # nothing learned: undefined


def test_summary_equals_a_slow_loop_over_the_definition():
  rng = np.random.default_rng(0)
  grid = canvas.location_grid(canvas.CanvasSpec(16, 4), 3, include=(4, 7))
  acc = rng.random(len(grid))
  acc[[tuple(p) for p in grid].index((4, 7))] = 0.9  # above chance, else the score is undefined (NaN)
  got = {k: float(v) for k, v in metrics.summarize_location_map(acc, grid, (4, 7), 2, 5).items()}
  in_acc = [a for a, p in zip(acc, grid) if tuple(p) == (4, 7)][0]
  off = [a for a, p in zip(acc, grid) if max(abs(p[0] - 4), abs(p[1] - 7)) > 2]
  assert got["in_acc"] == pytest.approx(in_acc)
  assert got["off_acc"] == pytest.approx(np.mean(off))
  assert got["invariance"] == pytest.approx((np.mean(off) - 0.2) / (in_acc - 0.2))


class PixelReader(nnx.Module):
  """Reads the object's class from a fixed canvas patch: knows everything at one location, nothing
  elsewhere. Class k's object is a constant image of value (k + 1) / K."""

  def __init__(self, y: int, x: int, num_classes: int):
    self.y, self.x, self.k = y, x, num_classes

  def __call__(self, x):
    v = x[:, self.y + 1, self.x + 1, 0]  # a pixel inside the object when it sits at (y, x)
    centres = (jnp.arange(self.k) + 1) / self.k
    return -jnp.abs(v[:, None] - centres[None, :]) + 1e-3 * jnp.arange(self.k)[None, :]


class GlobalMax(nnx.Module):
  """Exactly translation invariant: a global max over the canvas, matched to class levels."""

  def __init__(self, num_classes: int):
    self.k = num_classes

  def __call__(self, x):
    v = x.max(axis=(1, 2, 3))
    centres = (jnp.arange(self.k) + 1) / self.k
    return -jnp.abs(v[:, None] - centres[None, :])


def _constant_objects(num_classes: int, per_class: int, size: int):
  labels = np.repeat(np.arange(num_classes), per_class)
  values = np.round((labels + 1) / num_classes * 255).astype(np.uint8)
  return jnp.asarray(np.broadcast_to(values[:, None, None, None], (len(labels), size, size, 1))), labels


def test_a_pixel_reader_scores_chance_off_location_and_an_invariant_model_scores_one():
  k, spec = 4, canvas.CanvasSpec(14, 4)
  objs, labels = _constant_objects(k, 5, 4)
  p_ft = (5, 5)
  grid = canvas.location_grid(spec, 2, include=p_ft)

  preds = location_maps.predict_grid(Predictor(PixelReader(*p_ft, k), spec.canvas_size), objs, grid, batch_size=64)
  summary = metrics.summarize_location_map(metrics.location_accuracy(preds, labels), grid, p_ft, 1, k)
  assert float(summary["in_acc"]) == 1.0
  # Off-location the pixel is background (0) and the model always answers the same class: chance.
  assert float(summary["off_acc"]) == pytest.approx(1 / k, abs=0.02)
  assert float(summary["invariance"]) == pytest.approx(0.0, abs=0.03)

  preds = location_maps.predict_grid(Predictor(GlobalMax(k), spec.canvas_size), objs, grid, batch_size=64)
  summary = metrics.summarize_location_map(metrics.location_accuracy(preds, labels), grid, p_ft, 0, k)
  assert float(summary["in_acc"]) == 1.0 and float(summary["invariance"]) == 1.0


def test_predict_grid_chunking_matches_one_big_batch():
  k, spec = 3, canvas.CanvasSpec(12, 4)
  objs, _ = _constant_objects(k, 7, 4)  # 21 objects: chunks do not divide evenly
  grid = canvas.location_grid(spec, 1)  # 81 locations
  model = PixelReader(3, 2, k)
  small = location_maps.predict_grid(Predictor(model, spec.canvas_size), objs, grid, batch_size=40)
  x = canvas.place_grid(objs.astype(jnp.float32) / 255, jnp.asarray(grid), spec.canvas_size)
  ref = np.asarray(jnp.argmax(model(x.reshape(-1, 12, 12, 1)), -1)).reshape(len(grid), len(objs))
  np.testing.assert_array_equal(small, ref)


def test_map_chunks_pads_to_one_shape_cuts_the_padding_and_joins_pytrees_along_the_axis():
  import jax

  traces = []

  @jax.jit
  def fn(a, b):
    traces.append(a.shape)  # runs once per traced shape
    return {"rows": (a + b)[None, :], "pair": (a, 2 * b)}

  a, b = np.arange(7.0), np.arange(7.0) * 10
  out = chunks.map_chunks(fn, [a, b], 3)  # 3 + 3 + 1 (padded to 3)
  np.testing.assert_array_equal(out["pair"][0], a)
  np.testing.assert_array_equal(out["pair"][1], 2 * b)
  np.testing.assert_array_equal(out["rows"], np.stack([a[:3] + b[:3], a[3:6] + b[3:6], [a[6] + b[6]] * 3]))
  assert traces == [(3,)]  # one program for every chunk, the last one padded
  rows = chunks.map_chunks(lambda x, y: fn(x, y)["rows"], [a, b], 3, axis=1)  # joined along axis 1
  np.testing.assert_array_equal(rows, (a + b)[None, :])
  assert chunks.map_chunks(fn, [a, b], 100)["pair"][0].shape == (7,)  # chunk clipped to n


# -- when the invariance score is defined --------------------------------------------------------------


@pytest.mark.parametrize(
  "correct,n,chance", [(17, 100, 0.1), (20, 100, 0.1), (34, 200, 0.1), (3, 6, 1 / 3), (1, 10, 0.5), (10, 10, 0.5)]
)
def test_binomial_pvalue_matches_the_binomial_tail(correct, n, chance):
  from scipy import stats

  assert float(metrics.binomial_pvalue(correct, n, chance)) == pytest.approx(
    stats.binom.sf(correct - 1, n, chance), rel=1e-3, abs=1e-7
  )  # float32
  assert float(metrics.binomial_pvalue(0, n, chance)) == 1.0  # nothing right: no evidence at all


def test_invariance_is_undefined_unless_in_location_accuracy_is_significantly_above_chance():
  # 0.17 against a chance of 0.10 on 100 objects: p = 0.021, not below 0.01 -> undefined, although the
  # bare ratio would read (0.15 - 0.1) / (0.17 - 0.1) = 0.71
  assert np.isnan(float(metrics.invariance_score(0.17, 0.15, 0.1, num_objects=100)))
  assert float(metrics.invariance_score(0.17, 0.15, 0.1)) == pytest.approx(0.714, abs=1e-3)
  # the same accuracy on 1000 objects is overwhelming evidence (p ~ 1e-11)
  assert float(metrics.invariance_score(0.17, 0.15, 0.1, num_objects=1000)) == pytest.approx(0.714, abs=1e-3)
  # 0.20 on 100 objects: p = 0.002 -> defined
  assert float(metrics.invariance_score(0.2, 0.1, 0.1, num_objects=100)) == pytest.approx(0.0)


def test_summary_reports_the_pvalue_and_undefined_invariance_on_few_objects():
  grid = np.array([[0, 0], [0, 5], [5, 0], [5, 5]])
  acc = np.array([0.5, 0.2, 0.2, 0.2])  # 3 of 6 objects right at p_ft, chance 1/3: p = 0.32
  few = metrics.summarize_location_map(acc, grid, (0, 0), 0, 3, num_objects=6)
  assert float(few["in_pvalue"]) == pytest.approx(0.3196, abs=1e-3) and np.isnan(float(few["invariance"]))
  many = metrics.summarize_location_map(acc, grid, (0, 0), 0, 3, num_objects=600)
  assert float(many["invariance"]) == pytest.approx((0.2 - 1 / 3) / (0.5 - 1 / 3), abs=1e-4)
