"""VGG's first stages near the object (models/vgg_object_first.py): the same logits and gradients as the
network on the placed canvas, at every location (the borders included), for both input adapters that
change the blank canvas, odd canvases and one host location (`fixed` training); BatchNorm falls back."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import grid_logits_both_ways, logits_and_gradients
from flax import nnx

from shiftbench.data import canvas
from shiftbench.models import VGG, logits_on_canvas, vgg_object_first

# (canvas, object, depth, adapter, stages run near the object)
# (VGG16 on an odd canvas; a zero-preserving adapter with 3 stages near the object.)
CASES = [(32, 8, 11, "imagenet", 2), (33, 9, 16, "imagenet", 2), (64, 8, 11, "repeat", 3)]


def _model(canvas_size, depth, adapter, batch_norm=False):
  model = VGG(
    num_classes=5,
    canvas_size=canvas_size,
    depth=depth,
    width=0.0625,
    batch_norm=batch_norm,
    input_adapter=adapter,
    rngs=nnx.Rngs(0),
  )
  rng = np.random.default_rng(0)
  for stage in model.backbone.stages:  # non-zero biases: the blank canvas is not blank after a conv
    for conv_bn in stage:
      conv_bn[0].bias[...] = jnp.asarray(rng.normal(size=conv_bn[0].bias.shape).astype(np.float32) * 0.3)
  model.eval()  # no dropout: both paths see the same head
  return model


def _objects_and_locations(canvas_size, size, n=6):
  rng = np.random.default_rng(1)
  objects = jnp.asarray(rng.uniform(size=(n, size, size, 1)).astype(np.float32))
  m = canvas_size - size
  corners = [[0, 0], [m, m], [0, m], [m, 0], [1, m - 1]]
  locations = np.concatenate([corners, rng.integers(0, m + 1, (n - len(corners), 2))]).astype(np.int32)
  return objects, locations


def _grads_match(model, objects, locations, canvas_size):
  """The shortcut's and the placed canvas's logits and gradients (`conftest.logits_and_gradients`: one
  compiled program; numpy `locations` stay numpy, so a host location takes the pad path)."""
  fast = lambda m: m.on_canvas(objects, locations, canvas_size)
  placed = lambda m: m(canvas.place(objects, jnp.asarray(locations), canvas_size))
  (fast_logits, fast_grads), (slow_logits, slow_grads) = logits_and_gradients(model, [fast, placed])
  np.testing.assert_allclose(fast_logits, slow_logits, rtol=1e-5, atol=1e-5)
  assert len(fast_grads) == len(slow_grads)
  for a, b in zip(fast_grads, slow_grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))


@pytest.mark.parametrize("canvas_size,size,depth,adapter,stages", CASES)
def test_on_canvas_equals_the_network_on_the_placed_canvas_values_and_gradients(
  canvas_size, size, depth, adapter, stages
):
  model = _model(canvas_size, depth, adapter)
  objects, locations = _objects_and_locations(canvas_size, size)
  assert model._near_stages(objects, canvas_size) == stages
  _grads_match(model, objects, jnp.asarray(locations), canvas_size)


def test_on_canvas_at_one_host_location_equals_the_placed_canvas_values_and_gradients():
  # `fixed` training passes one numpy location for the whole batch: placements become pads, not gathers.
  model = _model(33, 11, "imagenet")
  objects, _ = _objects_and_locations(33, 9)
  _grads_match(model, objects[:3], np.broadcast_to(np.asarray((0, 23), np.int32), (3, 2)), 33)


@pytest.mark.parametrize("canvas_size,size,depth,adapter,stages", CASES[:2])
def test_on_grid_equals_the_network_on_every_placed_canvas(canvas_size, size, depth, adapter, stages):
  model = _model(canvas_size, depth, adapter)
  objects, _ = _objects_and_locations(canvas_size, size, n=5)
  m = canvas_size - size
  grid = jnp.asarray(list(itertools.product([0, 1, m // 2, m], [0, m - 1, m])), jnp.int32)
  fast, slow = grid_logits_both_ways(model, objects, grid, canvas_size)
  np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)


def test_batch_norm_and_the_switch_take_the_canvas_path():
  objects, locations = _objects_and_locations(32, 8)
  bn = _model(32, 11, "imagenet", batch_norm=True)
  assert vgg_object_first.supported(bn.backbone) is not None and bn._near_stages(objects, 32) == 0
  off = VGG(num_classes=5, canvas_size=32, depth=11, width=0.0625, object_first=False, rngs=nnx.Rngs(0))
  assert off._near_stages(objects, 32) == 0
  off.eval()
  for model in (bn, off):
    placed = model(canvas.place(objects, jnp.asarray(locations), 32))
    np.testing.assert_allclose(logits_on_canvas(model, objects, jnp.asarray(locations), 32), placed, rtol=1e-6)
