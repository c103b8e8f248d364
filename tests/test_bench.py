"""scripts/bench.py runs end to end on tiny settings (no timing asserts), so it does not rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("torch")


def test_bench_runs_and_writes_figures(tmp_path):
  out = tmp_path / "bench.json"
  cmd = [
    sys.executable,
    str(ROOT / "scripts" / "bench.py"),
    "--canvas",
    "16",
    "--object",
    "6",
    "--widths",
    "4,8",
    "--batch",
    "8",
    "--models",
    "gap",
    "--peak-n",
    "256",
    "--steps",
    "2",
    "--reps",
    "1",
    "--objects",
    "40",
    "--eval-objects",
    "8",
    "--grid-stride",
    "10",
    "--e2e-steps",
    "2",
    "--e2e-eval-every",
    "1",
    "--e2e-reps",
    "1",
    "--out",
    str(out),
  ]
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
  subprocess.run(cmd, check=True, env=env, cwd=tmp_path, capture_output=True, timeout=300)
  r = json.loads(out.read_text())
  assert set(r["train_speedup"]) == {"gap"}
  assert r["eval_speedup"] > 0 and r["e2e_speedup"] > 0
  assert "| train gap" in r["markdown"] and r["allocator"]


def test_bench_on_cuda_without_a_gpu_says_so(tmp_path):
  import torch

  if torch.cuda.is_available():
    pytest.skip("a CUDA device is present")
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
  run = subprocess.run(
    [sys.executable, str(ROOT / "scripts" / "bench.py"), "--device", "cuda"],
    env=env,
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert run.returncode != 0
  assert "--device cuda: PyTorch" in run.stderr and "sees no CUDA device" in run.stderr


def test_paper_preset_times_vgg16_against_the_torchvision_twin(tmp_path):
  # The tiniest VGG16 (1/32 width, 32-px canvas) so the run stays ~20 s here; the figures are measured ones.
  out = tmp_path / "paper.json"
  cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--preset", "paper", "--tv-width", "0.03125"]
  cmd += ["--canvas", "32", "--object", "8", "--batch", "4", "--steps", "1", "--reps", "2", "--objects", "16"]
  cmd += ["--eval-objects", "2", "--grid-stride", "24", "--peak-n", "128", "--torch-threads", "1", "--out", str(out)]
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
  subprocess.run(cmd, check=True, env=env, cwd=tmp_path, capture_output=True, timeout=300)
  r = json.loads(out.read_text())
  name = "vgg16 (width 0.03125)"
  assert r["args"]["preset"] == "paper" and r["args"]["lr"] == 1e-4 and r["paper"]["arch"] == "vgg16"
  assert set(r["train"]) == {name} and "e2e" not in r
  train, ev = r["train"][name], r["eval"]
  for side in ("shiftbench", "torch"):
    for m in (train, ev):
      assert 0 < m[side]["min"] <= m[side]["median"] <= m[side]["max"]
    assert train[side]["min"] != train[side]["max"]  # two repetitions, each timed: not one injected number
  assert train["speedup"]["median"] == pytest.approx(train["shiftbench"]["median"] / train["torch"]["median"], rel=0.5)
  assert train["flops_per_image"] > 0 and train["gflops"] > 0
  assert ev["locations"] == 9 and ev["objects"] == 2  # rows/columns 0, 12 (the centre, always included), 24
  assert f"| train {name} (img/s) | {train['shiftbench']['median']:.0f} " in r["markdown"]
  shown = f"| location map (canvases/s) | {ev['shiftbench']['median']:.0f} | {ev['torch']['median']:.0f} |"
  assert shown in r["markdown"]
  assert "torch.compile not timed" in " ".join(r["notes"])  # CPU: off unless --torch-compile on
