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
