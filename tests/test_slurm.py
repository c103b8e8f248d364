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
  start = subprocess.run([str(ROOT / "scripts" / "slurm_local.sh"), "start"], capture_output=True, text=True,
                         timeout=120)
  assert start.returncode == 0, start.stderr
  conf = re.fullmatch(r"export SLURM_CONF=(\S+)", start.stdout.strip()).group(1)
  return {**os.environ, "SLURM_CONF": conf, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}


def _shiftbench(args, env, cwd, timeout=900):
  return subprocess.run([sys.executable, "-m", "shiftbench.cli", *args], capture_output=True, text=True, env=env,
                        cwd=cwd, timeout=timeout)


def _rows(sweep: Path) -> dict[str, list[dict]]:
  out = {}
  for path in sorted(sweep.glob("*/results.json")):
    rows = json.loads(path.read_text())["rows"]
    out[path.parent.name] = [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
  return out


def _overrides(tmp_path, extra):
  return [*tiny_overrides(str(tmp_path / "data"), str(tmp_path / "ckpt")), "compile_cache=true",
          f"paths.compile_cache_dir={tmp_path / 'jax'}", *extra]


@pytest.mark.slow
def test_a_sweep_on_slurm_equals_the_same_sweep_run_locally(slurm_env, tmp_path):
  sweep = ["model=gap,cnn_fc", "seeds=[0],[1]", "pretrain.regimes=[scratch]", "finetune.scratch_modes=[full]"]
  local = _shiftbench(["-m", "hydra/launcher=basic", *_overrides(tmp_path, sweep),
                       f"hydra.sweep.dir={tmp_path / 'basic'}"], slurm_env, tmp_path)
  assert local.returncode == 0, local.stderr[-3000:]
  start = time.perf_counter()
  run = _shiftbench(["-m", "hydra/launcher=slurm_local", *_overrides(tmp_path, sweep),
                     f"hydra.sweep.dir={tmp_path / 'slurm'}"], slurm_env, tmp_path)
  assert run.returncode == 0, run.stderr[-3000:]
  print(f"slurm sweep of 4 jobs: {time.perf_counter() - start:.1f} s")
  jobs = [p for p in (tmp_path / "slurm" / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name)]
  assert len(jobs) == 4 and all(list(j.glob("*_result.pkl")) for j in jobs)  # 4 SLURM array tasks ran
  slurm_rows = _rows(tmp_path / "slurm")
  assert sorted(slurm_rows) == ["0", "1", "2", "3"] and all(len(r) == 1 for r in slurm_rows.values())
  assert slurm_rows == _rows(tmp_path / "basic")
  boards = []
  for name in ("basic", "slurm"):
    out = subprocess.run([sys.executable, "-m", "shiftbench.leaderboard", str(tmp_path / name), "--out",
                          str(tmp_path / f"board_{name}"), "--no-figures"], capture_output=True, text=True,
                         env=slurm_env, timeout=300)
    assert out.returncode == 0, out.stderr
    boards.append((tmp_path / f"board_{name}" / "leaderboard.md").read_text())
  assert "| gap" in boards[0] and "| cnn_fc" in boards[0] and boards[0] == boards[1]


def _squeue_state(job: str, env) -> str:
  return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, env=env).stdout.strip()


@pytest.mark.slow
def test_a_job_requeued_in_the_middle_of_pretraining_resumes_and_ends_with_the_same_rows(slurm_env, tmp_path):
  # ~5 ms per step at batch 128: the job is still pretraining when SLURM kills it, 2 s after the requeue.
  args = ["model=gap", "seeds=[0]", "pretrain.regimes=[translate]", "finetune.modes=[last]", "pretrain.steps=2000",
          "pretrain.batch_size=128", "pretrain.checkpoint_every=100"]
  env = {**slurm_env, "SHIFTBENCH_CACHE": str(tmp_path / "cache")}
  sub = subprocess.Popen([sys.executable, "-m", "shiftbench.cli", "-m", "hydra/launcher=slurm_local",
                          *_overrides(tmp_path, args), f"hydra.sweep.dir={tmp_path / 'slurm'}"], env=env,
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 600
    while not [p for p in (tmp_path / "ckpt").glob(".*.resume/*") if p.name.isdigit()]:  # a finished checkpoint
      assert sub.poll() is None and time.time() < deadline, "the job ended before its first checkpoint"
      time.sleep(0.1)
    (job,) = [p.name for p in (tmp_path / "slurm" / ".submitit").iterdir() if p.name.isdigit()]  # one job: no array
    subprocess.run(["scontrol", "requeue", job], check=True, env=env)
    while _squeue_state(job, env) != "PENDING":
      assert time.time() < deadline
      time.sleep(0.2)
    # A requeued job waits ~2 min before it is eligible again; start it now.
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, env=env)
    out, err = sub.communicate(timeout=600)
  finally:
    if sub.poll() is None:
      sub.kill()
  assert sub.returncode == 0, err[-3000:]
  log = "".join(p.read_text() for p in (tmp_path / "slurm" / ".submitit" / job).glob("*_log.*"))
  resumed = re.findall(r"pretrain gap/translate/s0: resumed from step (\d+) of 2000", log)
  assert len(resumed) == 1 and 100 <= int(resumed[0]) < 2000, log[-3000:]
  print(f"requeued job resumed from step {resumed[0]}")
  assert not list((tmp_path / "ckpt").glob(".*.resume"))  # dropped once the checkpoint was published
  # The same sweep, never interrupted, with its own cache:
  plain = _shiftbench(["-m", "hydra/launcher=basic", *_overrides(tmp_path, args[:-1]),
                       f"paths.checkpoint_dir={tmp_path / 'ckpt_plain'}", f"hydra.sweep.dir={tmp_path / 'basic'}"],
                      env, tmp_path)
  assert plain.returncode == 0, plain.stderr[-3000:]
  assert _rows(tmp_path / "slurm") == _rows(tmp_path / "basic")
