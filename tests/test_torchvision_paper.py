"""The paper-scale protocol at CPU size: `experiment=paper` end to end with the `imagenet` regime from a
locally written random-weight torchvision state dict, and the `finetune.until_accuracy` stopping rule."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch_fixtures as tf
from conftest import tiny_overrides
from hydra import compose, initialize_config_dir
from safetensors.numpy import save_file

from shiftbench.runs.experiment import run_experiment
from shiftbench.runs.settings import Settings

CONF = Path(__file__).resolve().parent.parent / "conf"
WIDTH = tf.VGG11_SMALL["width"]


def _compose(overrides: list[str]):
  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    return compose("config", overrides=overrides)


def test_paper_preset_runs_end_to_end_with_imagenet_weights(tiny_data_dir, tmp_path):
  weights = tmp_path / "vgg11.safetensors"
  save_file(tf.state_dict("vgg11_small"), str(weights))
  cfg = _compose(
    [
      "experiment=paper",
      *tiny_overrides(tiny_data_dir, str(tmp_path / "ckpt")),
      "model=vgg11",
      f"tv_width={WIDTH}",
      "canvas.size=32",
      "canvas.object_size=8",
      "seeds=[0]",
      "pretrain.regimes=[scratch,imagenet]",
      f"pretrain.weights={weights}",
      "finetune.steps=12",
      "finetune.steps_per_dispatch=2",
      "finetune.until_accuracy.threshold=0.0",
      "finetune.until_accuracy.window=2",
      "finetune.modes=[full]",  # the preset's last and head rows would each compile VGG again
      "finetune.learning_rates=[1e-4]",  # the preset's rate (the tiny overrides' 1e-2 diverges VGG)
      "finetune.eval_every=0",
      "eval.grid_stride=12",
      "eval.metrics=null",
    ]
  )  # the shift metrics are tested elsewhere; each would compile VGG again
  record = run_experiment(cfg, tmp_path / "run")
  rows = {r["pretrain"]: r for r in record["rows"]}
  assert set(rows) == {"scratch", "imagenet"}
  sha = hashlib.sha256(weights.read_bytes()).hexdigest()
  assert rows["imagenet"]["pretrain_weights"] == {
    "path": str(weights),
    "sha256": sha,
    "arch": "vgg11",
    "source": "torchvision state dict",
  }
  for row in rows.values():
    # Checked every dispatch (2 steps); at threshold 0 the first full window (step 2) ends training.
    stop = row["finetune_stop"]
    assert {k: stop[k] for k in ("rule", "step", "threshold", "window")} == {
      "rule": "until_accuracy",
      "step": 2,
      "threshold": 0.0,
      "window": 2,
    }
    assert 0.0 <= stop["final_mean"] <= 1.0
    assert row["finetune_steps"] == 2 and row["input_adapter"] == "imagenet"
    assert row["pretrain_invariance_before"] is None  # A is not ImageNet weights' task: no A map for them
  assert json.loads((tmp_path / "run" / "results.json").read_text())["rows"][1]["pretrain_weights"]["sha256"] == sha


def test_imagenet_regime_needs_weights_for_every_model(tiny_data_dir, tmp_path):
  base = [
    "experiment=paper",
    *tiny_overrides(tiny_data_dir, str(tmp_path)),
    "canvas.size=32",
    "canvas.object_size=8",
    "pretrain.regimes=[imagenet]",
    "eval.batch_size=8",  # not auto: its count would compile the full-width networks (~40 s), not the point here
  ]
  with pytest.raises(ValueError, match="needs weights for model 'vgg16'"):
    Settings.from_config(_compose(base))
  with pytest.raises(FileNotFoundError, match="no file"):
    Settings.from_config(
      _compose(
        base + [f"+pretrain.weights.vgg16={tmp_path}/none.pth", f"+pretrain.weights.densenet121={tmp_path}/none.pth"]
      )
    )
  # A published name is checked against each model's architecture, and nothing is downloaded yet.
  assert Settings.from_config(_compose(base + ["pretrain.weights=IMAGENET1K_V1"])).pretrain_weights == "IMAGENET1K_V1"
  with pytest.raises(ValueError, match="no published weights 'IMAGENET1K_V2' for 'vgg16'"):
    Settings.from_config(_compose(base + ["pretrain.weights=IMAGENET1K_V2"]))


def _row(model: str, target: str, regime: str, seed: int, inv: float, **arch) -> dict:
  return {
    "model": model,
    "pretrain": regime,
    "finetune": "full",
    "seed": seed,
    "invariance": inv,
    "architecture": {"_target_": f"shiftbench.models.{target}", **arch},
  }


def test_c7_and_c8_verdicts_follow_the_rows():
  from shiftbench.claims import catalogue as claims

  rows = [_row("densenet121", "DenseNet", "scratch", s, 0.6 + 0.01 * s) for s in range(3)]
  rows += [_row("vgg16", "VGG", "scratch", s, 0.1 + 0.02 * s, depth=16, batch_norm=False) for s in range(3)]
  got = {(c.id, c.rows): c.verdict for c in claims.evaluate(rows)}
  assert got[("C7", "densenet121 - vgg16: scratch/full invariance")] == claims.PASS
  assert got[("C8", "vgg16: imagenet/full - scratch/full")] == claims.NOT_RUN  # no imagenet rows
  rows += [_row("vgg16", "VGG", "imagenet", s, 0.25 + 0.02 * s, depth=16, batch_norm=False) for s in range(3)]
  got = {(c.id, c.rows): c.verdict for c in claims.evaluate(rows)}
  assert got[("C8", "vgg16: imagenet/full - scratch/full")] == claims.FAIL  # +0.15: above scratch, not far above
  flipped = [dict(r, invariance=0.05 + 0.001 * r["seed"]) if r["model"] == "densenet121" else r for r in rows]
  assert {c.id: c.verdict for c in claims.evaluate(flipped)}["C7"] == claims.FAIL
  assert not [c for c in claims.evaluate([_row("cnn", "ShiftNet", "scratch", 0, 0.1)]) if c.id in ("C7", "C8")]
