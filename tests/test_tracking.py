"""wandb: offline runs write locally and never need the network; disabled is a no-op."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from shiftbench import plots  # noqa: E402
from shiftbench.tracking import WandbTracker  # noqa: E402


def _row():
  return {"model": "gap", "pretrain": "translate", "finetune": "head", "seed": 0, "in_acc": 0.9, "off_acc": 0.8,
          "invariance": 0.875, "curve": [{"step": 0, "in_acc": 0.1, "off_acc": 0.1, "invariance": None},
                                         {"step": 5, "in_acc": 0.9, "off_acc": 0.8, "invariance": 0.875}]}


def test_offline_run_is_written_under_the_output_dir(tmp_path, monkeypatch):
  monkeypatch.delenv("WANDB_MODE", raising=False)
  heatmap = plots.save_location_map(tmp_path / "h.png", np.full((3, 3), 0.5), np.arange(3), np.arange(3), 0.1)
  tracker = WandbTracker(mode="offline", project="shiftbench-test")
  tracker.start({"seeds": [0]}, tmp_path)
  tracker.log_row(_row(), heatmap)
  tracker.log_table(["model", "invariance"], [["gap", 0.875]])
  tracker.finish()
  runs = list((tmp_path / "wandb").glob("offline-run-*"))
  assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_disabled_tracker_does_nothing(tmp_path):
  tracker = WandbTracker(mode="disabled")
  tracker.start({}, tmp_path)
  tracker.log_row(_row(), None)
  tracker.finish()
  assert not (tmp_path / "wandb").exists()


def test_unknown_mode_is_rejected():
  with pytest.raises(ValueError, match="unknown logger.mode 'cloud'; allowed: online, offline, disabled"):
    WandbTracker(mode="cloud")
