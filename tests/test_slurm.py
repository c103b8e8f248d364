"""The SLURM launcher for real, on the one-node cluster of scripts/slurm_local.sh.

In CI (`CI=true`) these tests must run: `.ci/run` installs SLURM and starts the cluster, and a missing
SLURM fails them. Elsewhere they skip with a one-line reason when SLURM is not installed.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_overrides

ROOT = Path(__file__).resolve().parent.parent
INSTALL = "apt-get install -y slurmctld slurmd slurm-client munge"
TIMING = ("eval_seconds", "finetune_seconds")  # wall times: the only fields that may differ between launchers


@pytest.fixture(scope="module")
def slurm_env():
  """The environment for a `shiftbench` that submits to the local cluster (started here if needed)."""
  missing = [c for c in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(c) is None]
  if missing:
    reason = f"SLURM not installed (no {', '.join(missing)}): {INSTALL}, see docs/slurm.md"
    if os.environ.get("CI") == "true":
      pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)
  start = subprocess.run(
    [str(ROOT / "scripts" / "slurm_local.sh"), "start"], capture_output=True, text=True, timeout=120, check=False
  )
  assert start.returncode == 0, start.stderr
  conf = re.fullmatch(r"export SLURM_CONF=(\S+)", start.stdout.strip()).group(1)
  return {**os.environ, "SLURM_CONF": conf, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}


def _shiftbench(args, env, cwd, timeout=900):
  return subprocess.run(
    [sys.executable, "-m", "shiftbench.cli", *args],
    capture_output=True,
    text=True,
    env=env,
    cwd=cwd,
    timeout=timeout,
    check=False,
  )


def _rows(sweep: Path) -> dict[str, list[dict]]:
  out = {}
  for path in sorted(sweep.glob("*/results.json")):
    rows = json.loads(path.read_text())["rows"]
    out[path.parent.name] = [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
  return out


def _overrides(tmp_path, extra):
  # The compile cache is the test session's (conftest.COMPILE_CACHE): jobs load the programs compiled before.
  return [*tiny_overrides(str(tmp_path / "data"), str(tmp_path / "ckpt")), "compile_cache=true", *extra]


def _squeue_state(job: str, env) -> str:
  return subprocess.run(
    ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, env=env, check=False
  ).stdout.strip()


def _requeue_in_pretraining(sweep: Path, ckpt: Path, env, proc, timeout=600) -> str:
  """Requeues array task 0 (gap, seed 0) right after its first periodic checkpoint; returns the task id.

  The job is suspended first (SIGSTOP, at once), so that however fast this machine pretrains, it is still
  in the middle of pretraining when SLURM kills it for the requeue.
  """
  deadline = time.time() + timeout
  while not [p for p in ckpt.glob(".gap-translate-s0-*.resume/*") if p.name.isdigit()]:  # a finished checkpoint
    assert proc.poll() is None and time.time() < deadline, "the sweep ended before job 0's first checkpoint"
    time.sleep(0.02)
  (job,) = [p.name for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+_0", p.name)]
  subprocess.run(["scontrol", "suspend", job], check=True, env=env)
  subprocess.run(["scontrol", "requeue", job], check=True, env=env)
  while _squeue_state(job, env) != "PENDING":
    assert time.time() < deadline
    time.sleep(0.2)
  # SLURM holds a job requeued while suspended, and makes a requeued job eligible only after ~2 min:
  # release it and start it now (and again while the sweep runs: `_sweep_output`).
  _release(job, env)
  return job


def _release(job: str, env) -> None:
  subprocess.run(["scontrol", "release", job], check=False, env=env, capture_output=True)
  subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=False, env=env, capture_output=True)


def _sweep_output(proc, job: str, env, timeout=900) -> tuple[str, str]:
  """The sweep's output once it ends. A requeued job started at once can reach slurmd before the killed
  run's batch directory is gone ("batch script setup failed ... File exists"); SLURM then holds it again
  ("launch failed requeued held"), so it is released whenever it waits."""
  deadline = time.time() + timeout
  while True:
    try:
      return proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
      assert time.time() < deadline, "the sweep did not finish"
      if _squeue_state(job, env) == "PENDING":
        _release(job, env)


@pytest.mark.slow
def test_a_sweep_on_slurm_with_a_requeued_job_equals_the_same_sweep_run_locally(slurm_env, tmp_path):
  """2 jobs (2 models, each pretraining): rows and leaderboard equal the basic launcher's, and the job
  requeued in the middle of its pretraining resumed from its periodic checkpoint."""
  sweep = [
    "model=gap,cnn_fc",
    "seeds=[0]",
    "pretrain.regimes=[translate]",
    "finetune.modes=[last]",
    "pretrain.steps=300",
    "pretrain.checkpoint_every=50",
  ]
  local = _shiftbench(
    [
      "-m",
      "hydra/launcher=basic",
      *_overrides(tmp_path, sweep),
      f"paths.checkpoint_dir={tmp_path / 'ckpt_basic'}",
      f"hydra.sweep.dir={tmp_path / 'basic'}",
    ],
    slurm_env,
    tmp_path,
  )
  assert local.returncode == 0, local.stderr[-3000:]
  start = time.perf_counter()
  proc = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "shiftbench.cli",
      "-m",
      "hydra/launcher=slurm_local",
      *_overrides(tmp_path, sweep),
      f"hydra.sweep.dir={tmp_path / 'slurm'}",
    ],
    env=slurm_env,
    cwd=tmp_path,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    job = _requeue_in_pretraining(tmp_path / "slurm", tmp_path / "ckpt", slurm_env, proc)
    _, err = _sweep_output(proc, job, env=slurm_env)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, err[-3000:]
  print(f"slurm sweep of 2 jobs, one requeued: {time.perf_counter() - start:.1f} s")
  tasks = [p for p in (tmp_path / "slurm" / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name)]
  assert len(tasks) == 2 and all(list(t.glob("*_result.pkl")) for t in tasks)  # 2 SLURM array tasks ran
  log = "".join(p.read_text() for p in (tmp_path / "slurm" / ".submitit" / job).glob("*_log.*"))
  resumed = re.findall(r"pretrain gap/translate/s0: resumed from step (\d+) of 300", log)
  assert len(resumed) == 1 and 50 <= int(resumed[0]) < 300, log[-3000:]
  print(f"requeued job {job} resumed from step {resumed[0]}")
  assert not list((tmp_path / "ckpt").glob(".*.resume"))  # dropped once each checkpoint was published
  slurm_rows = _rows(tmp_path / "slurm")
  assert sorted(slurm_rows) == ["0", "1"] and all(len(r) == 1 for r in slurm_rows.values())
  assert slurm_rows == _rows(tmp_path / "basic")
  boards = []
  for name in ("basic", "slurm"):
    out = subprocess.run(
      [
        sys.executable,
        "-m",
        "shiftbench.reporting.leaderboard",
        str(tmp_path / name),
        "--out",
        str(tmp_path / f"board_{name}"),
        "--no-figures",
      ],
      capture_output=True,
      text=True,
      env=slurm_env,
      timeout=300,
      check=False,
    )
    assert out.returncode == 0, out.stderr
    boards.append((tmp_path / f"board_{name}" / "leaderboard.md").read_text())
  assert "| gap" in boards[0] and "| cnn_fc" in boards[0] and boards[0] == boards[1]
