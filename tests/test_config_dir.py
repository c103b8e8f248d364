"""A user's own config folder outside the repository (`--config-dir`, or `hydra.searchpath`): a model and an
experiment preset of their own compose with the shipped groups, and the strict door accepts them (it checks a
model entry's `_target_` and leaves its arguments to the model). docs/configuration.md shows the same files;
the wheel test (test_wheel.py) runs a tiny protocol with them from outside the checkout."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from shiftbench.infra.errors import ConfigError
from shiftbench.runs.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
MYNET = """\
# My own ShiftNet variant: other widths, one hidden FC layer.
mynet:
  _target_: shiftbench.models.ShiftNet
  _partial_: true
  widths: [4, 8]
  kernel_size: 3
  downsample: max
  padding: same
  head: fc
  fc_hidden: [16]
"""
MINE = """\
# @package _global_
# My preset: my model beside the shipped gap, two seeds, the scratch and translate regimes.
defaults:
  - override /model: [mynet, gap]
seeds: [0, 1]
pretrain:
  regimes: [scratch, translate]
"""


def write_my_configs(folder: Path) -> Path:
  """The folder of docs/configuration.md's example: model/mynet.yaml and experiment/mine.yaml."""
  (folder / "model").mkdir(parents=True)
  (folder / "experiment").mkdir()
  (folder / "model" / "mynet.yaml").write_text(MYNET)
  (folder / "experiment" / "mine.yaml").write_text(MINE)
  return folder


def _compose(folder: Path, overrides: list[str]):
  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    return compose("config", overrides=[f"hydra.searchpath=[file://{folder}]", "logger=none", *overrides])


def test_a_config_folder_outside_the_checkout_composes_through_the_cli(tmp_path):
  mine = write_my_configs(tmp_path / "my_configs")
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  # Hydra's options (--config-dir, --cfg) go before the overrides.
  args = ["--config-dir", str(mine), "--cfg", "job", "experiment=mine", "logger=none"]
  run = subprocess.run(
    [sys.executable, "-m", "shiftbench.cli", *args],
    capture_output=True,
    text=True,
    env=env,
    cwd=tmp_path,
    timeout=60,
  )
  assert run.returncode == 0, run.stderr[-2000:]
  cfg = yaml.safe_load(run.stdout)
  assert list(cfg["model"]) == ["mynet", "gap"] and cfg["model"]["mynet"]["widths"] == [4, 8]
  assert cfg["seeds"] == [0, 1] and cfg["pretrain"]["regimes"] == ["scratch", "translate"]


def test_the_door_accepts_a_users_model_and_preset_and_still_checks_them(tmp_path):
  mine = write_my_configs(tmp_path / "my_configs")
  settings = Settings.from_config(_compose(mine, ["experiment=mine"]))
  assert list(settings.factories) == ["mynet", "gap"] and settings.seeds == (0, 1)
  assert settings.models["mynet"]["widths"] == [4, 8] and settings.models["mynet"]["fc_hidden"] == [16]
  with pytest.raises(ConfigError, match=r"model.mynet.widths values must be >= 1, got 0"):
    Settings.from_config(_compose(mine, ["model=mynet", "model.mynet.widths=[0]"]))
  with pytest.raises(ConfigError, match=r"model.mynet.widht=\[4\]: shiftbench.models.ShiftNet takes no argument"):
    Settings.from_config(_compose(mine, ["model=mynet", "+model.mynet.widht=[4]"]))
