"""The model protocol (shiftbench/models/shift_model.py): every preset in conf/model/ meets `ShiftModel`, and
`last`, `head` and `full` train exactly the classifier, the head and everything. The presets are listed from
the directory, so a new preset is checked by adding its file, and a variant needs nothing else."""

import shutil
from pathlib import Path

import hydra
import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from hydra import compose, initialize_config_dir

from shiftbench import models
from shiftbench.evaluators import predictor
from shiftbench.models import input_adapter
from shiftbench.runs import plan
from shiftbench.runs.settings import Settings

CONF = Path(__file__).resolve().parent.parent / "conf"
CANVAS, CLASSES = 32, 3  # the smallest canvas every preset takes (the torchvision networks need 32)
# DenseNet-121's 58 dense layers take ~30 s to trace on 2 CPU cores; one per block has the same parts.
SHALLOWER = {"densenet121": ["++model.densenet121.blocks=[1,1,1,1]"]}


def _presets(conf: Path) -> list[str]:
  return sorted(p.stem for p in (conf / "model").glob("*.yaml"))


def _compose(conf: Path, overrides: list[str]):
  with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
    # tv_width: the torchvision presets at an eighth of their width (the same layers, fewer channels)
    return compose("config", overrides=["logger=none", f"canvas.size={CANVAS}", "++tv_width=0.125", *overrides])


def _paths(state) -> set[tuple]:
  return {tuple(path) for path, _ in nnx.to_flat_state(state)}


def _params_under(part: nnx.Module, *prefix) -> set[tuple]:
  """The params of `part`, as paths from the model that holds it at `prefix`."""
  return {(*prefix, *path) for path in _paths(nnx.state(part, nnx.Param))}


def check_protocol(factory) -> nnx.Module:
  """`factory`'s model (built abstractly: shapes only) meets `ShiftModel`; each mode trains its part."""
  model = nnx.eval_shape(lambda: factory(num_classes=CLASSES, canvas_size=CANVAS, in_channels=1, rngs=nnx.Rngs(0)))
  assert isinstance(model, models.Network) and isinstance(model, models.ShiftModel)
  assert isinstance(model.backbone, models.FeatureExtractor) and isinstance(model.head, models.Head)
  assert model.input_adapter in (None, *input_adapter.KINDS)

  params = _paths(nnx.state(model, nnx.Param))
  backbone, head = _params_under(model.backbone, "backbone"), _params_under(model.head, "head")
  classifier = _params_under(model.head.classifier, "head", "classifier")
  hidden = {p for i, layer in enumerate(model.head.hidden) for p in _params_under(layer, "head", "hidden", i)}
  assert params == backbone | head and not backbone & head  # every param is the backbone's or the head's
  assert backbone and classifier and head == hidden | classifier
  trains = {mode: _paths(nnx.state(model, models.trainable(mode))) for mode in ("last", "head", "full")}
  assert trains == {"last": classifier, "head": head, "full": params}
  assert _paths(nnx.state(model, nnx.All(nnx.Param, models.TRANSFERABLE))) == params - classifier

  # Every way the package runs a model, on abstract inputs: objects on canvases (training, location maps,
  # shift metrics) and every layer's features on whole canvases (similarity), the logits last.
  graphdef, state = nnx.split(model)
  run = lambda f, *args: jax.eval_shape(lambda s, *a: f(nnx.merge(graphdef, s), *a), state, *args)  # noqa: E731
  objects = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
  at, grid = jax.ShapeDtypeStruct((2, 2), jnp.int32), jax.ShapeDtypeStruct((5, 2), jnp.int32)
  assert run(lambda m, o, p: models.logits_on_canvas(m, o, p, CANVAS), objects, at).shape == (2, CLASSES)
  assert run(lambda m, o, p: models.logits_on_grid(m, o, p, CANVAS), objects, grid).shape == (5, 2, CLASSES)
  features = run(predictor.layer_features, jax.ShapeDtypeStruct((2, CANVAS, CANVAS, 1), jnp.float32))
  assert len(features) >= 1 + max(len(model.head.hidden), 1) + 1  # blocks, then fc0.. or pre_logits, then logits
  assert features[-1].shape == (2, CLASSES)
  return model


@pytest.mark.parametrize("preset", _presets(CONF))
def test_every_model_preset_meets_the_protocol(preset):
  cfg = _compose(CONF, [f"model={preset}", *SHALLOWER.get(preset, [])])
  model = check_protocol(hydra.utils.instantiate(cfg.model[preset]))
  assert model.input_adapter == cfg.model[preset].get("input_adapter")  # the torchvision presets name theirs
  if "fc_hidden" in cfg.model[preset]:
    assert len(model.head.hidden) == len(cfg.model[preset].fc_hidden)


VARIANT = """\
# gap with anti-aliased strided convolutions and one hidden FC layer: a variant is this file, nothing else.
gap_conv_blur:
  _target_: shiftbench.models.ShiftNet
  _partial_: true
  widths: ${widths}
  kernel_size: 3
  downsample: conv_blur
  blur_size: 3
  padding: same
  head: gap
  fc_hidden: [16]
"""


def test_a_model_variant_is_one_yaml_file(tmp_path):
  conf = tmp_path / "conf"
  shutil.copytree(CONF, conf)
  (conf / "model" / "gap_conv_blur.yaml").write_text(VARIANT)
  assert _presets(conf) == sorted([*_presets(CONF), "gap_conv_blur"])  # the check above would pick it up
  settings = Settings.from_config(_compose(conf, ["model=[gap,gap_conv_blur]", "seeds=[0]"]))
  model = check_protocol(settings.factories["gap_conv_blur"])
  assert model.input_adapter is None and len(model.head.hidden) == 1
  assert {g.model for g in plan.groups(settings)} == {"gap", "gap_conv_blur"}  # and it runs every row gap does
  assert [rid._replace(model="gap") for g in plan.groups(settings) if g.model == "gap_conv_blur" for rid in g.rows] == [
    rid for g in plan.groups(settings) if g.model == "gap" for rid in g.rows
  ]
