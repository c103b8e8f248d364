"""torchvision-compatible networks: known answers against PyTorch twins, the converter, the input adapter.

The twins (`scripts/torchvision_twins.py`) are written from torchvision's documented architectures; with
random weights and random BatchNorm statistics, what they compute is stored in `tests/fixtures/torch_twins.npz`
(`scripts/make_torch_fixtures.py`, the `bench` extra). The same state dicts, drawn again here without torch,
are converted (`from_torchvision`) and the flax networks must give the same per-block activations and logits
(relative error <= 1e-4).
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch_fixtures as tf
from flax import nnx
from safetensors.numpy import save_file

from shiftbench.models import input_adapter, tv_layers
from shiftbench.models import torchvision_weights as tvw

WIDTH = tf.KNOWN_ANSWER["width"]
TOLERANCE = 1e-4
# torchvision's documented parameter counts of the full-size ImageNet networks (1000 classes).
PARAMS = {
  "vgg11": 132_863_336,
  "vgg16": 138_357_544,
  "vgg16_bn": 138_365_992,
  "resnet18_tv": 11_689_512,
  "resnet50": 25_557_032,
  "densenet121": 7_978_856,
}
# Each architecture reads its state dict from another kind of source, so every path is exercised (`.pth`,
# torch's own format, needs torch to read: `test_a_pth_file_reads_as_the_same_state_dict`).
SOURCES = {
  "vgg11": "safetensors",
  "vgg16": "mapping",
  "vgg16_bn": "safetensors",
  "resnet18_tv": "mapping",
  "resnet50": "safetensors",
  "densenet121": "mapping",
}


def _features_and_logits(model: nnx.Module, x: np.ndarray) -> list[np.ndarray]:
  """Every block's output (as NCHW, like PyTorch) and the logits, in one compiled program.

  Compiled at XLA's backend optimisation level 0: the same arithmetic, a third of the compile time of
  DenseNet-121's 120 distinct convs on the 2-core CPU.
  """
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda s, v: (lambda m: m.backbone.features(v) + [m(v)])(nnx.merge(graphdef, s)))
  compiled = fn.lower(state, jnp.asarray(x)).compile(compiler_options={"xla_backend_optimization_level": "0"})
  out = [np.asarray(o) for o in compiled(state, jnp.asarray(x))]
  return [o.transpose(0, 3, 1, 2) if o.ndim == 4 else o for o in out]


def _relative_error(ref: np.ndarray, got: np.ndarray) -> float:
  return float(np.abs(ref - got).max() / np.abs(ref).max())


@pytest.mark.parametrize("arch", list(tvw.ARCHS))
def test_converted_weights_match_the_pytorch_twin(arch, tmp_path):
  sd = tf.state_dict(arch)
  if SOURCES[arch] == "safetensors":
    source = tmp_path / "w.safetensors"
    save_file(sd, str(source))
  else:
    source = sd
  model = tvw.from_torchvision(arch, source)
  assert model.arch == arch
  x = tf.known_answer_input()
  assert tf.digest({"x": x}) == tf.meta()["input_sha256"], "the rebuilt input differs from the one torch ran"
  ref = tf.outputs(arch)
  got = _features_and_logits(model, x)
  assert [r.shape for r in ref] == [g.shape for g in got]
  errors = [_relative_error(r, g) for r, g in zip(ref, got)]
  assert max(errors[:-1]) <= TOLERANCE, f"{arch} per-block relative errors {errors[:-1]}"
  assert errors[-1] <= TOLERANCE, f"{arch} logits relative error {errors[-1]:.2e}"
  # A different number of classes: everything but the classifier is the state dict's.
  other = tvw.from_torchvision(arch, source, num_classes=3)
  assert other.head.classifier.kernel.value.shape[-1] == 3
  first, first_other = next(iter(model.torchvision_layers()))[1], next(iter(other.torchvision_layers()))[1]
  np.testing.assert_array_equal(np.asarray(first_other.kernel.value), np.asarray(first.kernel.value))


def test_a_pth_file_reads_as_the_same_state_dict(tmp_path):
  """torch's own format, read with torch (the `bench` extra installs it; the `test` extra does not)."""
  torch = pytest.importorskip("torch")
  sd = tf.state_dict("resnet18_tv")
  path = tmp_path / "w.pth"
  torch.save({f"module.{k}": torch.from_numpy(v) for k, v in sd.items()}, path)  # as saved from DataParallel
  got = tvw.load_state_dict(path)
  assert list(got) == list(sd)
  for key, value in sd.items():
    np.testing.assert_array_equal(got[key], value)


def test_a_pth_file_without_torch_is_a_one_line_error(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
  path = tmp_path / "w.pth"
  path.write_bytes(b"not read")
  with pytest.raises(ImportError, match=r"^reading .*w\.pth needs torch .*convert it to \.safetensors") as err:
    tvw.load_state_dict(path)
  assert "\n" not in str(err.value)


@pytest.mark.parametrize("arch", list(tvw.ARCHS))
def test_full_width_networks_have_torchvisions_parameter_count(arch):
  """At 1/8 width the flax networks load every twin tensor at the same shape (above); at full width
  (built abstractly: no weights drawn) they hold torchvision's documented number of parameters."""
  factory = tvw.ARCHS[arch]
  model = nnx.eval_shape(
    lambda: factory(num_classes=1000, in_channels=3, width=1.0, input_adapter="none", rngs=nnx.Rngs(0))
  )
  assert sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))) == PARAMS[arch]


def test_a_state_dict_of_another_width_or_architecture_is_refused():
  sd = tf.state_dict("resnet18_tv")
  model = tvw.ARCHS["resnet18_tv"](
    num_classes=10, in_channels=3, width=2 * WIDTH, input_adapter="none", rngs=nnx.Rngs(0)
  )
  with pytest.raises(ValueError, match=r"does not fit resnet18_tv: conv1.weight: shape"):
    tvw.load_into(model, sd)
  with pytest.raises(ValueError, match="does not fit resnet50"):
    tvw.from_torchvision("resnet50", sd)
  with pytest.raises(ValueError, match="unknown torchvision architecture"):
    tvw.from_torchvision("alexnet", sd)


@pytest.mark.parametrize("n,out", tf.ADAPTIVE_POOL)
def test_adaptive_average_pool_matches_pytorch(n, out):
  x = tf.pool_input(n)
  (ref,) = tf.outputs(f"adaptive_avg_pool_{n}_{out}")
  got = np.asarray(tv_layers.adaptive_avg_pool(jnp.asarray(x), out)).transpose(0, 3, 1, 2)
  np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_max_pool_3x3_stride_2_matches_pytorch():
  for n in tf.MAX_POOL:
    x = tf.pool_input(n)
    (ref,) = tf.outputs(f"max_pool_3x3_s2_{n}")
    np.testing.assert_array_equal(np.asarray(tv_layers.max_pool_3x3_s2(jnp.asarray(x))).transpose(0, 3, 1, 2), ref)


def test_imagenet_adapter_repeats_gray_and_normalises():
  gray = np.random.default_rng(0).uniform(size=(2, 5, 5, 1)).astype(np.float32)
  got = np.asarray(input_adapter.InputAdapter("imagenet", 1)(jnp.asarray(gray)))
  want = (np.repeat(gray, 3, -1) - np.array([0.485, 0.456, 0.406], np.float32)) / np.array(
    [0.229, 0.224, 0.225], np.float32
  )
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert np.asarray(input_adapter.InputAdapter("repeat", 1)(jnp.asarray(gray))).shape == (2, 5, 5, 3)
  with pytest.raises(ValueError, match="unknown input_adapter"):
    input_adapter.InputAdapter("rgb", 1)


def test_host_initializer_is_seeded_by_the_key():
  init = tv_layers.HE_FAN_OUT
  a, b = init(jax.random.key(0), (3, 3, 4, 8)), init(jax.random.key(0), (3, 3, 4, 8))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(a), np.asarray(init(jax.random.key(1), (3, 3, 4, 8))))
  assert abs(float(np.std(np.asarray(init(jax.random.key(2), (3, 3, 64, 64))))) - (2 / (9 * 64)) ** 0.5) < 0.005
