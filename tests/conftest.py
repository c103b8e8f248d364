"""Shared test settings: CPU only, no network, tiny data, no wandb."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["WANDB_MODE"] = "disabled"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """One glyph cache for the whole session, so each tiny dataset is generated once."""
  return str(tmp_path_factory.mktemp("tfds"))


# Overrides that make the protocol run in seconds: 3 classes x few objects, 20px canvas, few steps.
def tiny_overrides(data_dir: str, checkpoint_dir: str) -> list[str]:
  return [
      "logger=none", f"data.data_dir={data_dir}", f"paths.checkpoint_dir={checkpoint_dir}",
      "canvas.size=20", "canvas.object_size=8", "widths=[4,8]",
      "data.pretrain.classes=['0','1','2']", "data.pretrain.train_per_class=20", "data.pretrain.test_per_class=6",
      "data.finetune.classes=[A,B,C]", "data.finetune.train_per_class=20", "data.finetune.test_per_class=6",
      "data.pretrain.image_size=16", "data.finetune.image_size=16",
      "pretrain.steps=6", "pretrain.batch_size=8", "finetune.steps=4", "finetune.batch_size=8",
      "finetune.eval_every=2", "eval.grid_stride=6", "eval.curve_objects=6", "eval.batch_size=256",
  ]
