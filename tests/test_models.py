"""Model parts against their published definitions: BlurPool, APS, padding modes, shift (in)variance."""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import circular_shift_logits, objects_on_blank_canvas, train_a_few_steps
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftbench.models import ShiftNet, aps, layers

CONF = Path(__file__).resolve().parent.parent / "conf"
PASCAL = [[1], [1, 1], [1, 2, 1], [1, 3, 3, 1], [1, 4, 6, 4, 1], [1, 5, 10, 10, 5, 1], [1, 6, 15, 20, 15, 6, 1]]


def _rand(shape, seed=0):
  return jax.random.normal(jax.random.key(seed), shape)


def _jit(model: nnx.Module):
  """The model's forward pass as one compiled program (eager op-by-op dispatch is slow on CPU)."""
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  return lambda x: fn(state, x)


# -- BlurPool ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", range(1, 8))
def test_binomial_filter_is_the_normalised_outer_product_of_pascals_row(size):
  row = np.array(PASCAL[size - 1], np.float64)
  np.testing.assert_allclose(layers.binomial_filter(size), np.outer(row, row) / row.sum() ** 2, rtol=1e-6)


@pytest.mark.parametrize(
  "padding,expected",
  [
    ("reflect", [[0.5, 2.0], [0.5, 2.0]]),  # columns padded 1,0,1,2,3,2 -> [1,2,1]/4 -> 0.5, 2
    ("zero", [[0.1875, 1.5], [0.25, 2.0]]),  # row 0 keeps 3/4 of its weight: 0.25 * 0.75, 2 * 0.75
    ("circular", [[1.0, 2.0], [1.0, 2.0]]),  # columns padded 3,0,1,2,3,0 -> (3 + 0 + 1) / 4 = 1
  ],
)
def test_blur_size_3_by_hand_on_a_column_ramp(padding, expected):
  x = jnp.tile(jnp.arange(4.0), (4, 1))[None, :, :, None]  # x[i, j] = j
  np.testing.assert_allclose(layers.blur_downsample(x, 3, padding)[0, :, :, 0], expected, rtol=1e-6)


@pytest.mark.parametrize("size", range(1, 8))
@pytest.mark.parametrize("padding", ["reflect", "zero", "circular"])
def test_blur_equals_a_depthwise_conv_with_the_binomial_filter(size, padding):
  x = _rand((2, 10, 10, 3))
  before, after = (size - 1) // 2, size // 2
  xp = jnp.pad(x, ((0, 0), (before, after), (before, after), (0, 0)), mode=layers._JNP_PAD_MODE[padding])
  kernel = jnp.tile(jnp.asarray(layers.binomial_filter(size))[:, :, None, None], (1, 1, 1, 3))
  ref = jax.lax.conv_general_dilated(
    xp, kernel, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=3
  )
  np.testing.assert_allclose(layers.blur_downsample(x, size, padding), ref, atol=1e-5)


def test_blur_size_1_is_subsampling_and_size_2_is_average_pooling():
  x = _rand((2, 8, 8, 3))
  np.testing.assert_array_equal(layers.blur_downsample(x, 1), x[:, ::2, ::2])
  avg = x.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4))
  np.testing.assert_allclose(layers.blur_downsample(x, 2), avg, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(layers.avg_pool_2x2(x), avg, rtol=1e-6)


def test_conv_blur_and_avg_blur_are_the_same_network_in_the_conv_pool_backbone():
  x = _rand((2, 16, 16, 1))
  make = functools.partial(ShiftNet, num_classes=3, canvas_size=16, widths=(4, 8), head="gap", rngs=None)
  a, b, c = (_jit(make(downsample=d, rngs=nnx.Rngs(0))) for d in ("conv_blur", "avg_blur", "avg"))
  np.testing.assert_array_equal(a(x), b(x))
  assert not np.allclose(a(x), c(x))


# -- APS --------------------------------------------------------------------------------------------
def _with_components(values):
  """A (1, 2, 8, 1) map whose 4 polyphase components (each 1x4) are the given rows."""
  x = np.zeros((1, 2, 8, 1), np.float32)
  for k, row in enumerate(values):
    x[0, k // 2, (k % 2) :: 2, 0] = row
  return jnp.asarray(x)


def test_polyphase_components_are_the_four_stride_2_offsets():
  x = _rand((2, 6, 8, 3))
  comps = np.asarray(aps.polyphase(x))
  x = np.asarray(x)
  for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
    np.testing.assert_array_equal(comps[:, k], x[:, i::2, j::2])


@pytest.mark.parametrize("norm,winner", [("linf", 0), ("l1", 1), ("l2", 2)])
def test_aps_keeps_the_component_with_the_largest_chosen_norm(norm, winner):
  # l1 / squared l2 / linf: [3,0,0,0] -> 3 / 9 / 3; [1.6]*4 -> 6.4 / 10.24 / 1.6; [2.5,2.5,0,0] -> 5 / 12.5 / 2.5
  values = [[3, 0, 0, 0], [1.6] * 4, [2.5, 2.5, 0, 0], [0, 0, 0, 0]]
  x = _with_components(values)
  assert int(aps.phase_index(x, norm)[0]) == winner
  np.testing.assert_allclose(aps.aps_downsample(x, norm)[0, 0, :, 0], values[winner], rtol=1e-6)


def test_aps_ties_go_to_the_first_component_in_fixed_order():
  assert int(aps.phase_index(_with_components([[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0], [0] * 4]))[0]) == 0
  assert int(aps.phase_index(_with_components([[0] * 4, [0, 0, 0, 1], [0, 1, 0, 0], [0] * 4]))[0]) == 1


def test_aps_rejects_odd_feature_maps_and_unknown_norms():
  with pytest.raises(ValueError, match="even feature maps"):
    aps.aps_downsample(jnp.zeros((1, 5, 4, 1)))
  with pytest.raises(ValueError, match="unknown APS norm 'l3'"):
    aps.aps_downsample(jnp.zeros((1, 4, 4, 1)), "l3")


def test_aps_is_per_example_under_jit_and_vmap():
  x = _rand((6, 8, 8, 4))
  eager = aps.aps_downsample(x)
  jitted = jax.jit(aps.aps_downsample)(x)
  vmapped = jax.jit(jax.vmap(lambda e: aps.aps_downsample(e[None])[0]))(x)
  np.testing.assert_array_equal(eager, jitted)
  np.testing.assert_array_equal(eager, vmapped)
  assert len(set(np.asarray(aps.phase_index(x)).tolist())) > 1  # examples really choose differently


def test_aps_gradient_flows_into_the_selected_component_only():
  x = _rand((3, 6, 6, 2))
  w = _rand((3, 3, 3, 2), seed=1)
  g = jax.jit(jax.grad(lambda v: jnp.sum(aps.aps_downsample(v) * w)))(x)
  idx = np.asarray(aps.phase_index(x))
  comps, w = np.asarray(aps.polyphase(g)), np.asarray(w)
  for b in range(3):
    for k in range(4):
      np.testing.assert_array_equal(comps[b, k], w[b] if k == idx[b] else 0.0)


# -- padding modes and equivariance -----------------------------------------------------------------
@pytest.mark.parametrize("padding,size", [("same", 8), ("valid", 6), ("circular", 8), ("full", 10)])
def test_padding_modes_have_their_output_sizes(padding, size):
  conv = layers.PaddedConv(1, 2, 3, padding=padding, rngs=nnx.Rngs(0))
  assert conv(jnp.zeros((1, 8, 8, 1))).shape == (1, size, size, 2)


def test_full_padding_is_k_minus_1_zeros_and_circular_wraps_around():
  x = _rand((1, 6, 6, 1))
  for padding, pad, mode in [("full", 2, "constant"), ("circular", 1, "wrap"), ("same", 1, "constant")]:
    conv = layers.PaddedConv(1, 1, 3, padding=padding, rngs=nnx.Rngs(0))
    ref = (
      jax.lax.conv_general_dilated(
        jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode),
        conv.conv.kernel.value,
        (1, 1),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
      )
      + conv.conv.bias.value
    )
    np.testing.assert_allclose(conv(x), ref, atol=1e-5)


def _xla_conv(stride, padding):
  return lambda x, k: jax.lax.conv_general_dilated(
    x, k, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


# Every padding and stride the presets use (same, valid, full's explicit pads; stride 1 and 2), plus even
# and 1x1 kernels, odd sizes (the stride does not divide the padded size) and asymmetric pads.
@pytest.mark.parametrize(
  "k,stride,pad",
  [
    (3, 1, ((1, 1), (1, 1))),
    (3, 2, ((1, 1), (1, 1))),
    (3, 1, ((0, 0), (0, 0))),
    (3, 2, ((0, 0), (0, 0))),
    (5, 1, ((2, 2), (2, 2))),
    (5, 2, ((4, 4), (4, 4))),
    (4, 1, ((1, 2), (1, 2))),
    (2, 2, ((0, 1), (0, 1))),
    (1, 1, ((0, 0), (0, 0))),
    (1, 2, ((0, 0), (0, 0))),
    (3, 2, ((2, 0), (0, 1))),
    (7, 2, ((3, 3), (3, 3))),
  ],
)
@pytest.mark.parametrize("size", [(9, 9), (12, 11)])
def test_conv2d_gradients_equal_xlas_conv_gradients(k, stride, pad, size):
  x, kernel = _rand((3, *size, 4), 1), _rand((k, k, 4, 5), 2)
  ref = _xla_conv(stride, pad)
  ct = _rand(ref(x, kernel).shape, 3)
  loss = lambda f: lambda x, kernel: (f(x, kernel) * ct).sum()
  np.testing.assert_allclose(layers.conv2d(x, kernel, (stride, stride), pad), ref(x, kernel), atol=1e-5)
  ours = jax.grad(loss(lambda x, k: layers.conv2d(x, k, (stride, stride), pad)), (0, 1))(x, kernel)
  for a, b in zip(ours, jax.grad(loss(ref), (0, 1))(x, kernel)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((2, 0), (1, 1))])
def test_conv_drop_in_takes_nnx_convs_padding_and_sends_the_rest_to_lax(padding):
  x, kernel = _rand((2, 9, 8, 3), 4), _rand((3, 3, 3, 4), 5)
  args = (x, kernel, (2, 2), padding)
  nhwc = dict(dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(
    layers.conv_general_dilated(*args, **nhwc), jax.lax.conv_general_dilated(*args, **nhwc), atol=1e-5
  )
  uses_conv2d = lambda **kw: (
    "custom_vjp_call"
    in str(jax.make_jaxpr(lambda x, k: layers.conv_general_dilated(x, k, (2, 2), padding, **kw))(x, kernel))
  )
  assert uses_conv2d(**nhwc)
  assert not uses_conv2d(rhs_dilation=(2, 2), **nhwc)  # dilated (or grouped, or another layout): plain lax


def test_conv_gradients_in_a_scan_compile_to_canonical_convs():
  # XLA:CPU runs only NHWC x HWIO -> NHWC convs (dim_labels b01f_01io->b01f) with its Eigen kernels; it
  # rewrote its own conv gradients into that form outside loops but not inside a `lax.scan`, where they
  # ran ~20x slower. Every conv of a scanned training step must be in that form.
  rngs = nnx.Rngs(0)
  first = layers.PaddedConv(4, 6, 3, padding="same", stride=2, rngs=rngs)
  second = layers.PaddedConv(6, 2, 3, padding="valid", rngs=rngs)
  (g1, p1), (g2, p2) = nnx.split(first), nnx.split(second)
  loss = lambda p, x: (nnx.merge(g2, p[1])(nnx.merge(g1, p[0])(x)) ** 2).sum()

  def steps(params, xs):
    def body(p, x):
      return jax.tree.map(lambda a, b: a - 0.1 * b, p, jax.grad(loss)(p, x)), None

    return jax.lax.scan(body, params, xs)[0]

  params = (p1, p2)
  hlo = jax.jit(steps).lower(params, _rand((3, 2, 9, 9, 4))).compile().as_text()
  labels = [line.split("dim_labels=")[1].split(",")[0] for line in hlo.splitlines() if " convolution(" in line]
  # two forward convs, two kernel gradients, one input gradient (the second conv's)
  assert len(labels) == 5 and set(labels) == {"b01f_01io->b01f"}, labels


@functools.cache
def _conv_stack(padding):
  rngs = nnx.Rngs(0)
  convs = [
    layers.PaddedConv(c_in, c_out, k, padding=padding, rngs=rngs)
    for c_in, c_out, k in [(1, 4, 3), (4, 4, 4), (4, 2, 5)]
  ]
  return jax.jit(lambda x: functools.reduce(lambda h, c: jax.nn.relu(c(h)), convs, x))


@settings(max_examples=10, deadline=None)
@given(dy=st.integers(0, 11), dx=st.integers(0, 11), seed=st.integers(0, 2**16))
def test_circular_stride_1_conv_stack_commutes_with_roll(dy, dx, seed):
  f, x = _conv_stack("circular"), np.random.default_rng(seed).normal(size=(2, 12, 12, 1)).astype(np.float32)
  np.testing.assert_allclose(f(np.roll(x, (dy, dx), (1, 2))), np.roll(f(x), (dy, dx), (1, 2)), atol=1e-5)


def test_zero_padding_breaks_roll_equivariance_at_the_border_only():
  f, x = _conv_stack("same"), _rand((2, 20, 20, 1))
  shifted, expected = f(jnp.roll(x, (3, 3), (1, 2))), jnp.roll(f(x), (3, 3), (1, 2))
  assert not np.allclose(shifted, expected, atol=1e-3)  # wrapped rows/cols see zeros instead of pixels
  # The stack reads 4 pixels before and 5 after; rows 7..14 see neither the seam nor the canvas border.
  np.testing.assert_allclose(shifted[:, 7:15, 7:15], expected[:, 7:15, 7:15], atol=1e-5)


# -- circular-shift invariance (APS) vs. the classic models ----------------------------------------
def _preset(name: str, canvas: int = 32, num_classes: int = 10, **overrides):
  import hydra
  from hydra import compose, initialize_config_dir

  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    cfg = compose("config", overrides=[f"model={name}"])
  factory = hydra.utils.instantiate(cfg.model[name])
  return factory(num_classes=num_classes, canvas_size=canvas, in_channels=1, rngs=nnx.Rngs(0), **overrides)


def _all_shifts(n: int) -> np.ndarray:
  return np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)


def test_aps_preset_is_exactly_invariant_to_every_circular_shift_of_the_canvas():
  logits = np.asarray(circular_shift_logits(_preset("aps"), objects_on_blank_canvas(2, 32), _all_shifts(32)))
  assert (logits.argmax(-1) == logits[0].argmax(-1)).all()  # consistency_circular = 100% over 1024 shifts
  np.testing.assert_allclose(logits, np.broadcast_to(logits[0], logits.shape), atol=1e-5)


@pytest.mark.parametrize("name", ["cnn_fc", "gap"])
def test_max_pool_presets_are_not_invariant_to_circular_shifts(name):
  shifts = np.random.default_rng(0).integers(0, 32, (64, 2))
  logits = np.asarray(circular_shift_logits(_preset(name), objects_on_blank_canvas(8, 32), shifts))
  consistency = (logits.argmax(-1) == logits[0].argmax(-1)).mean()
  assert consistency < 0.9  # measured 0.09 (cnn_fc) and 0.25 (gap) over all 1024 shifts at random init


@functools.cache
def _aps_net(trained: bool, blur_size: int = 1):
  net = ShiftNet(
    num_classes=3,
    canvas_size=32,
    widths=(4, 8, 8),
    downsample="aps",
    padding="circular",
    head="gap",
    blur_size=blur_size,
    rngs=nnx.Rngs(0),
  )
  if trained:
    before = nnx.state(net, nnx.Param)
    before = jax.tree.map(np.array, before)
    train_a_few_steps(net, steps=3)
    assert not np.allclose(
      nnx.state(net, nnx.Param)["head"]["classifier"]["bias"].value, before["head"]["classifier"]["bias"].value
    )
  return net


@settings(max_examples=6, deadline=None)
@given(dy=st.integers(0, 31), dx=st.integers(0, 31), seed=st.integers(0, 2**16))
def test_aps_net_logits_are_invariant_to_random_circular_shifts_at_init_and_after_training(dy, dx, seed):
  x = np.random.default_rng(seed).uniform(size=(2, 32, 32, 1)).astype(np.float32)
  for trained in (False, True):
    logits = np.asarray(circular_shift_logits(_aps_net(trained), x, [(0, 0), (dy, dx)]))
    np.testing.assert_allclose(logits[1], logits[0], atol=1e-5)


def test_aps_with_a_circular_blur_before_selection_stays_invariant():
  shifts = [(0, 0), (1, 0), (0, 1), (1, 1), (5, 30), (17, 9)]
  logits = np.asarray(circular_shift_logits(_aps_net(False, blur_size=3), objects_on_blank_canvas(2, 32), shifts))
  np.testing.assert_allclose(logits, np.broadcast_to(logits[0], logits.shape), atol=1e-5)


# -- heads: hidden FC layers transfer, only the classifier is new -----------------------------------------


@pytest.mark.parametrize("head", ["fc", "gap", "conv"])
def test_head_hidden_layers_and_classifier(head):
  net = ShiftNet(num_classes=5, canvas_size=16, widths=(4, 8), head=head, fc_hidden=(12, 6), rngs=nnx.Rngs(0))
  x = np.random.default_rng(0).uniform(size=(3, 16, 16, 1)).astype(np.float32)
  assert net(x).shape == (3, 5)
  features = net.backbone(x)
  hidden = net.head.hidden_features(features)
  assert [h.shape[-1] for h in hidden] == [12, 6] and bool(jnp.all(hidden[-1] >= 0))  # ReLU after each
  np.testing.assert_allclose(net.head.pre_logits(features), hidden[-1])
  flat_in = {"fc": 4 * 4 * 8, "gap": 8, "conv": 8}[head]  # 16 px after two 2x downsamplings: 4x4x8
  assert _kernel_shape(net.head.hidden[0])[-2] == flat_in and _kernel_shape(net.head.classifier)[-2:] == (6, 5)


def _kernel_shape(layer):
  return tuple(layer.kernel.value.shape)


def test_no_hidden_layers_is_the_plain_head():
  net = ShiftNet(num_classes=3, canvas_size=16, widths=(4, 8), head="fc", rngs=nnx.Rngs(0))
  x = np.ones((2, 16, 16, 1), np.float32)
  assert len(net.head.hidden) == 0
  expected = net.head.classifier(net.backbone(x).reshape(2, -1))
  np.testing.assert_allclose(net(x), expected, rtol=1e-6)


def test_transfer_copies_everything_but_the_classifier():
  from shiftbench.models import transfer

  make = lambda k, seed: ShiftNet(
    num_classes=k,
    canvas_size=16,
    widths=(4, 8),
    head="fc",
    fc_hidden=(6,),  # noqa: E731
    rngs=nnx.Rngs(seed),
  )
  source, target = make(10, 0), make(3, 1)
  fresh = jax.tree.map(np.array, nnx.state(target, nnx.Param))
  transfer(source, target)
  got, src = nnx.state(target, nnx.Param), nnx.state(source, nnx.Param)
  jax.tree.map(np.testing.assert_array_equal, got["backbone"], src["backbone"])
  jax.tree.map(np.testing.assert_array_equal, got["head"]["hidden"], src["head"]["hidden"])
  jax.tree.map(np.testing.assert_array_equal, got["head"]["classifier"], fresh["head"]["classifier"])
  assert got["head"]["classifier"]["kernel"].value.shape == (6, 3)
  # copies: changing the target leaves the source as it was
  target.head.hidden[0].kernel.value = target.head.hidden[0].kernel.value + 1
  assert not np.array_equal(source.head.hidden[0].kernel.value, target.head.hidden[0].kernel.value)


@pytest.mark.parametrize("shape", [(3, 3, 1, 8), (5, 5, 8, 16), (1, 1, 32, 10), (512, 256), (300, 301)])
def test_the_flat_kernel_draw_has_the_bits_of_flaxs_lecun_normal(shape):
  # The flat draw (compiled ~6x faster eagerly) must leave every initial weight, so every number, unchanged.
  key = jax.random.key(3)
  expected = np.asarray(nnx.initializers.lecun_normal()(key, shape))
  assert np.asarray(layers.lecun_normal_flat(key, shape)).tobytes() == expected.tobytes()
  traced = jax.jit(lambda k: layers.lecun_normal_flat(k, shape))(key)
  assert np.asarray(traced).tobytes() == expected.tobytes()
  if len(shape) == 4:
    ours = layers.PaddedConv(shape[2], shape[3], shape[0], rngs=nnx.Rngs(5)).conv.kernel[...]
    flax_default = nnx.Conv(shape[2], shape[3], shape[:2], padding="SAME", rngs=nnx.Rngs(5)).kernel[...]
    assert np.asarray(ours).tobytes() == np.asarray(flax_default).tobytes()


def test_the_flat_kernel_draw_keeps_its_bits_under_the_older_threefry():
  # Without partitionable threefry a longer draw's prefix is not the shorter draw: the length stays exact.
  with jax.threefry_partitionable(False):
    key = jax.random.key(3)
    expected = np.asarray(nnx.initializers.lecun_normal()(key, (3, 3, 8, 16)))
    assert np.asarray(layers.lecun_normal_flat(key, (3, 3, 8, 16))).tobytes() == expected.tobytes()
