"""ResNet backbone: published layout, swappable downsampling, batch norm modes in training/evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import circular_shift_logits, objects_on_blank_canvas, train_a_few_steps
from flax import nnx

from shiftbench.evaluators import location_maps
from shiftbench.evaluators.predictor import Predictor
from shiftbench.models import ResNet

TINY = dict(widths=(4, 4, 8, 8), blocks=(2, 2, 2, 2))
SMALL = dict(widths=(4, 8), blocks=(1, 1))  # stem + a plain block + a stride-2 block: compiles fast
APS_SMALL = dict(widths=(4, 4, 8, 8), blocks=(1, 1, 1, 1), downsample="aps", padding="circular", blur_size=1)


def _jit(model: nnx.Module):
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  return lambda x: fn(state, x)


def test_resnet18_at_the_published_widths_has_torchvisions_parameter_count():
  net = nnx.eval_shape(
    lambda: ResNet(
      num_classes=1000, canvas_size=64, in_channels=3, widths=(64, 128, 256, 512), stem="imagenet", rngs=nnx.Rngs(0)
    )
  )
  assert sum(p.size for p in jax.tree.leaves(nnx.state(net, nnx.Param))) == 11_689_512


@pytest.mark.parametrize("stem,side", [("cifar", 4), ("imagenet", 1)])
@pytest.mark.parametrize("downsample", ["stride", "blur", "aps"])
def test_every_downsampling_halves_the_map_at_the_same_places(stem, side, downsample):
  net = nnx.eval_shape(
    lambda: ResNet(
      num_classes=3, canvas_size=32, stem=stem, downsample=downsample, padding="circular", rngs=nnx.Rngs(0), **TINY
    )
  )
  graphdef, state = nnx.split(net.backbone)
  feats = jax.eval_shape(
    lambda s, x: nnx.merge(graphdef, s).features(x), state, jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32)
  )
  sides = [f.shape[1] for f in feats]
  first = 32 if stem == "cifar" else 8
  assert sides == [first, first, first, first // 2, first // 2, first // 4, first // 4, side, side]


def test_resnet_rejects_paddings_that_change_the_size():
  with pytest.raises(ValueError, match="unknown ResNet padding 'valid'"):
    ResNet(num_classes=3, canvas_size=32, padding="valid", rngs=nnx.Rngs(0), **TINY)


def _stats(net):
  return jax.tree.map(np.array, nnx.state(net, nnx.BatchStat))


def _params(net, part):
  return jax.tree.map(np.array, nnx.state(getattr(net, part), nnx.Param))


def _changed(a, b):
  return not all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_full_training_updates_batch_stats_and_head_training_freezes_the_whole_backbone():
  net = ResNet(num_classes=3, canvas_size=16, rngs=nnx.Rngs(0), **SMALL)
  stats0, backbone0, head0 = _stats(net), _params(net, "backbone"), _params(net, "head")
  train_a_few_steps(net, steps=2, mode="full", canvas_size=16)
  assert _changed(stats0, _stats(net)) and _changed(backbone0, _params(net, "backbone"))

  stats1, backbone1, head1 = _stats(net), _params(net, "backbone"), _params(net, "head")
  train_a_few_steps(net, steps=2, mode="head", canvas_size=16, seed=1)
  assert not _changed(stats1, _stats(net)), "head fine-tuning must not update the backbone's BN statistics"
  assert not _changed(backbone1, _params(net, "backbone"))
  assert _changed(head1, _params(net, "head"))
  assert _changed(head0, head1)


def test_several_steps_per_dispatch_carry_the_batch_stats_through_the_scan():
  one, two = (ResNet(num_classes=3, canvas_size=16, rngs=nnx.Rngs(0), widths=(4,), blocks=(1,)) for _ in range(2))
  train_a_few_steps(one, steps=2, canvas_size=16, dispatch=1)
  train_a_few_steps(two, steps=2, canvas_size=16, dispatch=2)
  for u, v in zip(jax.tree.leaves(_stats(one)), jax.tree.leaves(_stats(two))):
    np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)
  assert _changed(
    _stats(one), _stats(ResNet(num_classes=3, canvas_size=16, rngs=nnx.Rngs(0), widths=(4,), blocks=(1,)))
  )


def test_eval_mode_output_does_not_depend_on_the_rest_of_the_batch():
  net = ResNet(num_classes=3, canvas_size=16, rngs=nnx.Rngs(0), **SMALL)
  train_a_few_steps(net, steps=2, canvas_size=16)  # leaves the model in eval mode with trained running stats
  x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 1))
  f = _jit(net)
  np.testing.assert_allclose(f(x[:1]), f(x)[:1], atol=1e-5)
  net.train()  # the contrast that makes the check meaningful: batch statistics couple the examples
  f = _jit(net)
  assert not np.allclose(f(x[:2])[:1], f(x)[:1], atol=1e-3)


def test_a_predictor_evaluates_a_train_mode_model_with_running_averages():
  net = ResNet(num_classes=3, canvas_size=16, rngs=nnx.Rngs(0), **SMALL)
  train_a_few_steps(net, steps=2, canvas_size=16)
  objects = jnp.asarray(np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1)), jnp.uint8)
  locations = np.array([[0, 0], [4, 8]])
  net.train()
  alone = location_maps.predict_grid(Predictor(net, 16), objects[:1], locations)
  together = location_maps.predict_grid(Predictor(net, 16), objects, locations)
  assert all(bn.use_running_average for _, bn in nnx.iter_graph(net) if isinstance(bn, nnx.BatchNorm))
  np.testing.assert_array_equal(alone[:, 0], together[:, 0])


def test_resnet_aps_is_exactly_invariant_to_every_circular_shift_after_training():
  net = ResNet(num_classes=3, canvas_size=32, rngs=nnx.Rngs(0), **APS_SMALL)
  train_a_few_steps(net, steps=2)
  shifts = np.stack(np.meshgrid(np.arange(32), np.arange(32), indexing="ij"), -1).reshape(-1, 2)
  logits = np.asarray(circular_shift_logits(net, objects_on_blank_canvas(1, 32), shifts))
  assert (logits.argmax(-1) == logits[0].argmax(-1)).all()
  np.testing.assert_allclose(logits, np.broadcast_to(logits[0], logits.shape), atol=1e-5)


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_resnet18_aps_preset_and_imagenet_stem_are_invariant_on_shifts_of_every_parity(stem):
  from test_models import _preset

  # The preset itself with its CIFAR stem; the ImageNet stem (2 more APS layers) on a small variant.
  net = (
    _preset("resnet18_aps")
    if stem == "cifar"
    else ResNet(num_classes=3, canvas_size=32, stem=stem, rngs=nnx.Rngs(0), **APS_SMALL)
  )
  shifts = [(0, 0), (1, 0), (0, 1), (1, 1), (3, 30), (30, 5), (16, 16), (7, 21)]
  logits = np.asarray(circular_shift_logits(net, objects_on_blank_canvas(2, 32), shifts))
  assert (logits.argmax(-1) == logits[0].argmax(-1)).all()
  np.testing.assert_allclose(logits, np.broadcast_to(logits[0], logits.shape), atol=1e-5)


def test_resnet18_with_strided_convs_is_not_circular_shift_invariant():
  from test_models import _preset

  shifts = [(0, 0), (1, 0), (0, 1), (1, 1), (3, 30), (30, 5), (16, 16), (7, 21)]
  logits = np.asarray(circular_shift_logits(_preset("resnet18"), objects_on_blank_canvas(2, 32), shifts))
  assert np.abs(logits - logits[0]).max() > 1e-2
