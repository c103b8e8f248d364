"""Golden keys: the literal protocol, comparison and pretrained-checkpoint keys of one fixed config.

A key names a cached checkpoint and decides which rows share a table, so a change that moves one (a
renamed module in a `_target_`, a setting read differently, a new default) must be deliberate. The protocol
version is passed in explicitly, so a release (or a raised `PROTOCOL_VERSION`) that changes nothing else
keeps them. When a change must move a key, update it here and say why in the commit.

Moved once, in 0.7.0: the keys hashed the package version ("0.6.0") and now hash the protocol version
("1", `comparison.PROTOCOL_VERSION`) instead, under another name; nothing else in them changed.
Moved again for L2-SP named without arguments (`l2sp`): a method's key holds its resolved
constructor arguments, defaults included (`settings.resolved_arguments`, issue 32), so its `classifier_ratio` (0.1)
joined it; an entry that gives it, as the `methods` preset's does, keeps its key.
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
VERSION = "1"  # a protocol version, not the current one: these keys must not move when it is raised


@pytest.fixture(scope="module")
def settings() -> Settings:
  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    return Settings.from_config(compose("config", overrides=OVERRIDES))


def test_protocol_key(settings):
  assert comparison.key_of(comparison.protocol_settings(settings.config, HASHES, VERSION)) == "a30d350d0b31"


@pytest.mark.parametrize(
  ("model", "method", "key"),
  [
    ("cnn_fc", "plain", "544c01cfc7f4"),
    ("cnn_fc", "l2sp", "847316af601f"),
    ("cnn_fc", "lpft", "ee534ba8e049"),
    ("gap", "plain", "077f290c3cba"),
    ("gap", "l2sp", "7fa026291d85"),
  ],
)
def test_comparison_keys(settings, model, method, key):
  protocol = comparison.protocol_settings(settings.config, HASHES, VERSION)
  own = settings.method_configs.get(method)
  assert comparison.key_of(comparison.row_settings(protocol, settings.models[model], own)) == key


def test_pretrained_checkpoint_key(settings):
  _, description = pretraining.checkpoint_of(settings, "cnn_fc", "translate", 0, HASHES["pretrain"])
  assert checkpoints.checkpoint_key(description, VERSION) == "3f93925676587ae2"
