"""`hydra/launcher=local_gpus`: a sweep's jobs in parallel on one machine, one device each (tested on CPU)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_overrides

from shiftbench import launchers

ROOT = Path(__file__).resolve().parent.parent


def test_devices_are_the_given_ids_or_every_listed_gpu(monkeypatch):
  assert launchers.visible_devices([0, 2]) == [0, 2] and launchers.visible_devices("1,3") == [1, 3]
  with pytest.raises(ValueError, match="devices is empty"):
    launchers.visible_devices([])

  class Listed:
    stdout = "GPU 0: NVIDIA H200 (UUID: a)\nGPU 1: NVIDIA H200 (UUID: b)\n"

  monkeypatch.setattr(launchers.subprocess, "run", lambda *a, **k: Listed())
  assert launchers.visible_devices("auto") == [0, 1]
  monkeypatch.setattr(launchers.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(OSError("no nvidia-smi")))
  assert launchers.visible_devices("auto") == [0]


@pytest.mark.slow
def test_two_jobs_run_at_once_each_on_its_own_device(tiny_data_dir, tmp_path):
  sweep = tmp_path / "sweep"
  run = subprocess.run(
    [
      sys.executable,
      "-m",
      "shiftbench.cli",
      "-m",
      "hydra/launcher=local_gpus",
      "hydra.launcher.devices=[0,1]",
      'hydra.launcher.setup=["echo job-device=$CUDA_VISIBLE_DEVICES"]',
      *tiny_overrides(tiny_data_dir, str(tmp_path / "ckpt")),
      "compile_cache=true",
      "model=gap",
      "seeds=[0],[1]",
      "pretrain.regimes=[scratch]",
      "finetune.scratch_modes=[full]",
      f"hydra.sweep.dir={sweep}",
    ],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=tmp_path,
    check=False,
    env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"},
  )
  assert run.returncode == 0, run.stderr[-3000:]
  out = run.stdout + run.stderr
  assert sorted(re.findall(r"job-device=(\d)", out)) == ["0", "1"]  # each job saw one device, its own
  events = re.findall(r"local_gpus: job (?:#\d+ on device (\d)|on device (\d) finished)", out)
  started = [i for i, (start, _) in enumerate(events) if start]
  finished = [i for i, (_, end) in enumerate(events) if end]
  assert len(started) == 2 and len(finished) == 2 and max(started) < min(finished)  # both ran at once
  spans = []
  for job in ("0", "1"):
    (row,) = json.loads((sweep / job / "results.json").read_text())["rows"]
    assert row["seed"] == int(job) and row["model"] == "gap"
    (log,) = (sweep / job).glob("*.log")  # Hydra's job log: a timestamp per line
    stamps = re.findall(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\]", log.read_text(), re.MULTILINE)
    spans.append((stamps[0], stamps[-1]))
  assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans  # the two jobs' lifetimes overlap
  board = json.loads((sweep / "leaderboard" / "leaderboard.json").read_text())  # the multirun's one board
  assert [(e["model"], e["in_acc_n"]) for e in board] == [("gap", 2)]  # one line over both jobs' seeds
