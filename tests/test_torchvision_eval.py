"""Evaluation that fits at 224 px: location maps reduced on the device, worst-of-k from its own picks, and
`auto` batch sizing from the model's compiled per-canvas memory (the estimate checked against XLA's own
buffer assignment of a location-map chunk, on CPU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_backend_defaults import FakeDevice

from shiftbench import evaluators
from shiftbench.data import canvas, streams
from shiftbench.data.device import DeviceObjects
from shiftbench.evaluators import batching, location_maps, metrics, predictor
from shiftbench.evaluators.predictor import Predictor
from shiftbench.models import ShiftNet
from shiftbench.models import torchvision_weights as tvw
from shiftbench.rows import per_object


def _objects(n: int, k: int = 3, size: int = 6, seed: int = 0) -> DeviceObjects:
  rng = np.random.default_rng(seed)
  return DeviceObjects.from_numpy(rng.integers(0, 256, (n, size, size, 1)), rng.integers(0, k, n), k)


def test_reduced_location_map_equals_the_one_read_off_predictions():
  model = ShiftNet(num_classes=3, canvas_size=16, widths=(4, 8), fc_hidden=(8,), object_first=False, rngs=nnx.Rngs(0))
  objs = _objects(13)  # 13 objects, 11 locations, batch 20: ragged chunks on both axes, padding masked
  grid = canvas.location_grid(canvas.CanvasSpec(16, 6), 3)[:11]
  model = Predictor(model, 16)
  preds = location_maps.predict_grid(model, objs.images, grid, batch_size=20)
  stats = location_maps.location_stats(model, objs.images, objs.labels, grid, batch_size=20)
  labels = np.asarray(objs.labels)
  np.testing.assert_array_equal(stats.correct, (preds == labels[None]).sum(1))
  np.testing.assert_allclose(stats.accuracy(), np.asarray(metrics.location_accuracy(preds, labels)), rtol=1e-6)
  np.testing.assert_array_equal(stats.everywhere, (preds == labels[None]).all(0))
  assert 0 < stats.correct.sum() < preds.size  # neither all right nor all wrong: the comparison means something
  assert stats.off_correct is None and stats.in_correct is None  # kept only given the fine-tune location
  # Worst case and worst-of-k through the evaluators give what they read off the (L, N) map before.
  ctx = evaluators.EvalContext(canvas.CanvasSpec(16, 6), grid, (0, 0), batch_size=20, seed=3)
  worst = dict(evaluators.WorstCase().run(model, objs, ctx))["acc"]
  assert worst == pytest.approx(float(metrics.worst_case_accuracy(preds, labels)))
  of_k = dict(evaluators.WorstCase(k=4, seed=5).run(model, objs, ctx))["acc"]
  key = jax.random.fold_in(streams.evaluator_stream(3, ""), 5)  # the stream an evaluator run alone gets
  assert of_k == pytest.approx(float(metrics.worst_of_k_accuracy(key, preds, labels, 4)))


def test_per_object_counts_equal_the_ones_read_off_predictions_and_give_the_rows_accuracies():
  """Each object's correct count off the fine-tune location and its correctness at it, reduced on the device
  over ragged chunks (padded locations and objects counted nowhere), equal the (L, N) predictions' and
  recompute the map's in_acc and off_acc."""
  model = ShiftNet(num_classes=3, canvas_size=16, widths=(4, 8), fc_hidden=(8,), object_first=False, rngs=nnx.Rngs(1))
  objs = _objects(13, seed=1)
  grid = canvas.location_grid(canvas.CanvasSpec(16, 6), 3)[:11]
  model, at = Predictor(model, 16), 4
  preds = location_maps.predict_grid(model, objs.images, grid, batch_size=20)
  stats = location_maps.location_stats(model, objs.images, objs.labels, grid, batch_size=20, at=at)
  correct = preds == np.asarray(objs.labels)[None]
  np.testing.assert_array_equal(stats.off_correct, np.delete(correct, at, axis=0).sum(0))
  np.testing.assert_array_equal(stats.in_correct, correct[at])
  assert 0 < stats.off_correct.sum() < correct.size - len(objs) and 0 < stats.in_correct.sum() < len(objs)
  summary = metrics.summarize_location_map(stats.accuracy(), grid, tuple(grid[at]), 0, 3)
  row = per_object.of({"per_object": per_object.record(stats.off_correct, stats.in_correct, len(grid) - 1)})
  off_gap, in_gap = abs(row.off_acc() - float(summary["off_acc"])), abs(row.in_acc() - float(summary["in_acc"]))
  assert off_gap < 1e-6 and in_gap < 1e-6, f"largest difference {max(off_gap, in_gap):.2e}"


def test_activation_estimate_bounds_what_xla_assigns_to_a_location_map_chunk():
  model = tvw.ARCHS["resnet18_tv"](num_classes=3, width=0.125, rngs=nnx.Rngs(0))
  model.eval()
  per_canvas = batching.model_activation_bytes(model, 64, 1)
  p = Predictor(model, 64)
  fn = predictor._compiled(p.graphdef, 64, location_maps._chunk_stats, ())  # the program `location_stats` runs
  objs, labels = jnp.zeros((16, 14, 14, 1), jnp.uint8), jnp.zeros(16, jnp.int32)
  roles = jnp.full(4, location_maps.OFF, jnp.int32)
  compiled = fn.lower(p.state, objs, labels, jnp.ones(16, bool), jnp.zeros((4, 2), jnp.int32), roles).compile()
  used = compiled.memory_analysis().temp_size_in_bytes  # 64 canvases
  assert used <= 64 * per_canvas <= 2.0 * used


def test_auto_batch_goes_below_the_floor_only_on_a_models_own_count():
  big = 30 * 2**20  # VGG16 at 224 px: ~30 MiB per canvas
  assert batching.auto_batch_size(224, [[64]], FakeDevice(16 * 2**30), per_canvas_bytes=big) == 128
  assert batching.auto_batch_size(224, [[64]], FakeDevice(100 * 2**30), per_canvas_bytes=big) == 512
  assert batching.auto_batch_size(64, [[32, 64, 128]], FakeDevice(4 * 2**30)) == 1024  # width bound: the floor
