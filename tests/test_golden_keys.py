"""Golden keys: the literal protocol, comparison and pretrained-checkpoint keys of one fixed config.

A key names a cached checkpoint and decides which rows share a table, so a change that moves one (a
renamed module in a `_target_`, a setting read differently, a new default) must be deliberate. These were
computed on 0.6.0; the package version is passed in explicitly, so a release that changes nothing else
keeps them. When a change must move a key, update it here and say why in the commit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from shiftbench.rows import comparison
from shiftbench.runs import pretraining
from shiftbench.runs.settings import Settings
from shiftbench.training import checkpoints

CONF = Path(__file__).resolve().parent.parent / "conf"
OVERRIDES = ["model=[cnn_fc,gap]", "logger=none", "finetune.methods=[plain,lpft,wise,l2sp]", "seeds=[0]"]
HASHES = {"pretrain": "a" * 64, "finetune": "b" * 64}  # stand-ins for the datasets' content hashes
VERSION = "0.6.0"


@pytest.fixture(scope="module")
def settings() -> Settings:
  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    return Settings.from_config(compose("config", overrides=OVERRIDES))


def test_protocol_key(settings):
  assert comparison.key_of(comparison.protocol_settings(settings.config, HASHES, VERSION)) == "e7561ea3418a"


@pytest.mark.parametrize(
  ("model", "method", "key"),
  [
    ("cnn_fc", "plain", "0d97ab919a17"),
    ("cnn_fc", "l2sp", "de9577c4a79e"),
    ("gap", "plain", "80038af5bfe2"),
    ("gap", "l2sp", "286057312af4"),
  ],
)
def test_comparison_keys(settings, model, method, key):
  protocol = comparison.protocol_settings(settings.config, HASHES, VERSION)
  own = settings.method_configs.get(method)
  assert comparison.key_of(comparison.row_settings(protocol, settings.models[model], own)) == key


def test_pretrained_checkpoint_key(settings):
  _, description = pretraining.checkpoint_of(settings, "cnn_fc", "translate", 0, HASHES["pretrain"])
  assert checkpoints.checkpoint_key(description, VERSION) == "41f1ce469805a3dd"
