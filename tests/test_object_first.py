"""The blank-canvas shortcut (models/object_first.py) and the max-pool gradient it relies on.

The shortcut must give the same logits and the same gradients as running the network on the placed
canvas, for every padding, kernel size, downsampling and canvas parity it claims, at every location,
the borders included (where part of its output lands off the grid and must be dropped).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import grid_logits_both_ways, logits_and_gradients
from flax import nnx

from shiftbench.data import canvas
from shiftbench.data.device import DeviceObjects
from shiftbench.models import ShiftNet, layers, logits_on_canvas, logits_on_grid, object_first
from shiftbench.training import loop


def _reduce_window_max_pool(x):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def test_max_pool_gradient_goes_to_one_position_per_window_even_on_ties():
  # A blank canvas is all ties: each window must pass its gradient on once, to its first position.
  grad = jax.grad(lambda x: layers.max_pool_2x2(x).sum())(jnp.ones((1, 4, 5, 1)))[0, :, :, 0]
  expected = np.zeros((4, 5))
  expected[::2, 0:4:2] = 1.0
  np.testing.assert_array_equal(grad, expected)


def test_max_pool_matches_reduce_window_values_and_gradients_with_many_ties():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 3, (2, 7, 6, 3)).astype(np.float32))  # values in {0,1,2}: many ties
  g = jnp.asarray(rng.normal(size=(2, 3, 3, 3)).astype(np.float32))
  ours, ours_vjp = jax.vjp(layers.max_pool_2x2, x)
  ref, ref_vjp = jax.vjp(_reduce_window_max_pool, x)
  np.testing.assert_array_equal(ours, ref)
  np.testing.assert_array_equal(ours_vjp(g)[0], ref_vjp(g)[0])


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("cin", [1, 8])
def test_patch_conv_matches_xla_conv_values_and_gradients(stride, cin):
  rng = np.random.default_rng(cin + stride)
  x = jnp.asarray(rng.normal(size=(3, 11, 10, cin)).astype(np.float32))
  k = jnp.asarray(rng.normal(size=(3, 3, cin, 5)).astype(np.float32))
  f = lambda patches: lambda x, k: (object_first.conv_valid(x, k, stride, patches) ** 2).sum()
  np.testing.assert_allclose(
    object_first.conv_valid(x, k, stride, True), object_first.conv_valid(x, k, stride, False), rtol=1e-5, atol=1e-5
  )
  for a, b in zip(jax.grad(f(True), (0, 1))(x, k), jax.grad(f(False), (0, 1))(x, k)):
    # Gradients reach ~800 here, so entries that cancel to ~0.2 carry float32 rounding of the large terms
    # (1e-4 seen when XLA's dot and conv sum in different orders): tolerance relative to the largest entry.
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(np.abs(b).max()))


# (canvas, object, kernel, padding, downsample, head): the presets' settings (cnn_fc, gap, fcn) and
# odd canvases, even and larger kernels, `valid` and `full` padding. Three-block models: with `max`, block
# 1 runs on the object and later convs near it while their window is small enough; with `stride` only block 1.
CASES = [
  (32, 12, 3, "same", "max", "fc"),
  (31, 12, 3, "same", "max", "gap"),
  (32, 7, 4, "valid", "max", "gap"),
  (21, 8, 5, "full", "max", "fc"),
  (21, 8, 5, "full", "stride", "conv"),
  (24, 9, 2, "same", "stride", "gap"),
  (23, 10, 3, "same", "stride", "conv"),
  (56, 20, 3, "same", "max", "fc"),  # blocks 2 and 3 both run near the object in training
]


def _model(canvas_size, kernel, padding, downsample, head, seed=0):
  model = ShiftNet(
    num_classes=5,
    canvas_size=canvas_size,
    widths=(4, 6, 3),
    kernel_size=kernel,
    padding=padding,
    downsample=downsample,
    head=head,
    rngs=nnx.Rngs(seed),
  )
  bias = model.backbone.blocks[0].conv.conv.bias  # a non-zero bias: the blank canvas is not blank after it
  bias[...] = jnp.asarray(np.random.default_rng(seed).normal(size=bias.shape).astype(np.float32))
  assert object_first.supported(model.backbone.blocks[0]) is None
  return model


def _objects_and_locations(canvas_size, size, n=7, seed=0):
  rng = np.random.default_rng(seed)
  objects = jnp.asarray(rng.uniform(size=(n, size, size, 1)).astype(np.float32))
  m = canvas_size - size
  corners = [[0, 0], [m, m], [0, m], [m, 0], [1, m - 1]]
  locations = np.concatenate([corners, rng.integers(0, m + 1, (n - len(corners), 2))]).astype(np.int32)
  return objects, jnp.asarray(locations)


def _assert_same_logits_and_gradients(fast, slow):
  (fast_logits, fast_grads), (slow_logits, slow_grads) = fast, slow
  np.testing.assert_allclose(fast_logits, slow_logits, rtol=1e-5, atol=1e-5)
  assert len(fast_grads) == len(slow_grads)
  for a, b in zip(fast_grads, slow_grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("canvas_size,size,kernel,padding,downsample,head", CASES)
def test_on_canvas_equals_the_network_on_the_placed_canvas_values_and_gradients(
  canvas_size, size, kernel, padding, downsample, head
):
  model = _model(canvas_size, kernel, padding, downsample, head)
  objects, locations = _objects_and_locations(canvas_size, size)
  fast, slow = logits_and_gradients(
    model,
    [
      lambda m: m.on_canvas(objects, locations, canvas_size),
      lambda m: m(canvas.place(objects, locations, canvas_size)),
    ],
  )
  _assert_same_logits_and_gradients(fast, slow)


@pytest.mark.parametrize("canvas_size,size,kernel,padding,downsample,head", CASES)
def test_on_canvas_at_one_host_location_equals_the_placed_canvas_values_and_gradients(
  canvas_size, size, kernel, padding, downsample, head
):
  # `fixed` training passes one numpy location for the whole batch: placements become pads, not gathers.
  # The numpy locations are closed over, never traced, so the compiled program takes the pad path.
  model = _model(canvas_size, kernel, padding, downsample, head)
  objects = _objects_and_locations(canvas_size, size)[0][:3]
  m = canvas_size - size
  forwards = []
  for location in [(0, 0), (m, m), (1, m - 1), (m // 2, m // 2 + 1)]:
    host = np.broadcast_to(np.asarray(location, np.int32), (3, 2))
    forwards += [
      lambda mod, host=host: mod.on_canvas(objects, host, canvas_size),
      lambda mod, host=host: mod(canvas.place(objects, jnp.asarray(host), canvas_size)),
    ]
  results = logits_and_gradients(model, forwards)
  for fast, slow in zip(results[::2], results[1::2]):
    _assert_same_logits_and_gradients(fast, slow)


@pytest.mark.parametrize("canvas_size,size,kernel,padding,downsample,head", CASES)
def test_on_grid_equals_the_network_on_every_placed_canvas(canvas_size, size, kernel, padding, downsample, head):
  model = _model(canvas_size, kernel, padding, downsample, head)
  objects, _ = _objects_and_locations(canvas_size, size, n=5)
  m = canvas_size - size
  grid = jnp.asarray(list(itertools.product([0, 1, m // 2, m - 1, m], [0, 1, 2, m])), jnp.int32)
  fast, slow = grid_logits_both_ways(model, objects, grid, canvas_size)
  assert fast.shape == (len(grid), 5, 5)
  np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["circular", "blur", "aps"])
def test_unsupported_first_blocks_fall_back_to_the_canvas_and_still_agree(kind):
  kw = {
    "circular": dict(padding="circular"),
    "blur": dict(downsample="blur"),
    "aps": dict(padding="circular", downsample="aps"),
  }[kind]
  model = ShiftNet(num_classes=3, canvas_size=16, widths=(4, 4), head="gap", rngs=nnx.Rngs(0), **kw)
  assert object_first.supported(model.backbone.blocks[0]) is not None
  objects, locations = _objects_and_locations(16, 6, n=6)
  grid = locations[:3]
  x = canvas.place_grid(objects, grid, 16)

  @nnx.jit
  def both_paths(model):
    return (
      (logits_on_canvas(model, objects, locations, 16), model(canvas.place(objects, locations, 16))),
      (logits_on_grid(model, objects, grid, 16), model(x.reshape(-1, *x.shape[2:])).reshape(3, 6, -1)),
    )

  for fast, slow in both_paths(model):
    np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=1e-6)


def test_training_with_and_without_the_shortcut_gives_the_same_parameters():
  rng = np.random.default_rng(0)
  data = DeviceObjects.from_numpy(rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8), rng.integers(0, 3, 40), 3)
  spec = canvas.CanvasSpec(20, 8)
  params = []
  for shortcut in (True, False):
    model = ShiftNet(num_classes=3, canvas_size=20, widths=(4, 8), object_first=shortcut, rngs=nnx.Rngs(0))
    loop.train(
      model,
      optax.adam(1e-2),
      data,
      spec,
      loop.Placement("translate", (0, 0)),
      steps=5,
      batch_size=8,
      seed=0,
      log_every=10**9,
    )
    params.append(jax.tree.leaves(nnx.state(model, nnx.Param)))
  for a, b in zip(*params):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_place_per_location_equals_canvas_place_values_and_gradients_at_any_offset():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(6, 2, 4, 3, 2)).astype(np.float32))
  offsets = jnp.asarray([[0, 0], [-2, 5], [7, -3], [-9, 0], [3, 40], [5, 4]], jnp.int32)  # in, partly, fully off
  fast = lambda x: object_first.place_per_location(x, offsets, 8)
  slow = lambda x: jax.vmap(lambda xl, o: canvas.place(xl, jnp.broadcast_to(o, (2, 2)), 8))(x, offsets)
  np.testing.assert_array_equal(fast(x), slow(x))
  g = jnp.asarray(rng.normal(size=(6, 2, 8, 8, 2)).astype(np.float32))
  np.testing.assert_array_equal(jax.vjp(fast, x)[1](g)[0], jax.vjp(slow, x)[1](g)[0])


@pytest.mark.parametrize("offset", [(0, 0), (-2, 5), (7, -3), (-9, 0), (3, 40), (5, 4)])
def test_equal_host_offsets_place_like_the_gathers(offset):
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(3, 2, 4, 3, 2)).astype(np.float32))
  host = np.broadcast_to(np.asarray(offset, np.int32), (3, 2))
  pad_path = lambda a: object_first.place_per_location(a, host, 8)
  gather_path = lambda a: object_first.place_per_location(a, jnp.asarray(host), 8)
  np.testing.assert_array_equal(pad_path(x), gather_path(x))
  g = jnp.asarray(rng.normal(size=(3, 2, 8, 8, 2)).astype(np.float32))
  np.testing.assert_array_equal(jax.vjp(pad_path, x)[1](g)[0], jax.vjp(gather_path, x)[1](g)[0])


def test_the_placement_gradient_is_its_transpose():
  # <place(y), x> == <y, place^T(x)> for all x, y defines the transpose, which the custom VJP must be.
  rng = np.random.default_rng(4)
  offsets = jnp.asarray([[0, 0], [-2, 5], [7, -3], [-9, 0], [3, 40]], jnp.int32)
  x = jnp.asarray(rng.normal(size=(5, 2, 8, 8, 3)).astype(np.float32))
  y = jnp.asarray(rng.normal(size=(5, 2, 4, 4, 3)).astype(np.float32))
  placed, vjp = jax.vjp(lambda y: object_first.place_per_location(y, offsets, 8), y)
  np.testing.assert_allclose((placed * x).sum(), (y * vjp(x)[0]).sum(), rtol=1e-5)


@pytest.mark.parametrize("host", [False, True])
def test_crop_image_equals_slicing_the_padded_image_values_and_gradients(host):
  rng = np.random.default_rng(6)
  image = jnp.asarray(rng.normal(size=(7, 7, 3)).astype(np.float32))
  offsets = np.asarray([[0, 0], [-2, 5], [6, -3], [-9, 0], [3, 40], [2, 3]] if not host else [[-2, 5]] * 3, np.int32)

  def reference(im):  # zero-pad generously, then slice each window
    p = jnp.pad(im, ((50, 50), (50, 50), (0, 0)))
    return jnp.stack([p[50 + a : 54 + a, 50 + b : 54 + b] for a, b in offsets])

  fast = lambda im: object_first.crop_image(im, offsets if host else jnp.asarray(offsets), 4)
  np.testing.assert_array_equal(fast(image), reference(image))
  w = jnp.asarray(rng.normal(size=(len(offsets), 4, 4, 3)).astype(np.float32))
  np.testing.assert_allclose(
    jax.grad(lambda im: (fast(im) * w).sum())(image),
    jax.grad(lambda im: (reference(im) * w).sum())(image),
    rtol=1e-6,
    atol=1e-6,
  )


def test_the_shortcut_reaches_as_far_as_it_should():
  # 32-px canvas, 12-px objects: blocks 1 and 2 near the object (block 3's window would be the whole map);
  # 56-px canvas, 20-px objects: blocks 1-3, in training and in location maps.
  for canvas_size, size, train_next, grid_next in [(32, 12, 2, 2), (56, 20, 3, 3)]:
    model = _model(canvas_size, 3, "same", "max", "gap")
    objects, locations = _objects_and_locations(canvas_size, size, n=5)
    blocks = model.backbone.blocks
    reached = []  # how far each path goes is decided from shapes alone: trace it, compute nothing

    def trace(objects, locations, blocks=blocks, canvas_size=canvas_size, reached=reached):
      for path in (object_first.first_blocks, object_first.first_blocks_grid):
        reached.append(path(blocks, objects, locations, canvas_size)[1])

    jax.eval_shape(trace, objects, locations)
    assert reached == [train_next, grid_next]


def test_non_square_objects_take_the_canvas_path():
  model = _model(20, 3, "same", "max", "gap")
  objects = jnp.asarray(np.random.default_rng(5).uniform(size=(3, 6, 9, 1)).astype(np.float32))
  locations = jnp.asarray([[0, 0], [14, 11], [5, 3]], jnp.int32)
  np.testing.assert_allclose(
    model.on_canvas(objects, locations, 20), model(canvas.place(objects, locations, 20)), rtol=1e-6, atol=1e-6
  )
