"""Jobs sharing a cache: one pretrains under the checkpoint's lock, the others wait and restore; publishing
never overwrites; a corrupted checkpoint is replaced under the lock; one process per run directory."""

import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from shiftbench.infra import cache, hashing, locks
from shiftbench.infra.errors import CacheError
from shiftbench.models import ShiftNet
from shiftbench.training import checkpoints as pretrained

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}

# One job: when every job is ready (imports done, its program compiled), asks for the checkpoint.
# "Pretraining" sleeps (a wide window for a race) and sets the params from the seed, so every job that
# trained has the same bytes.
WORKER = textwrap.dedent("""
  import hashlib, json, logging, sys, time
  import jax, numpy as np
  from flax import nnx
  from pathlib import Path
  from shiftbench.runs import compile_cache
  from shiftbench.training import checkpoints as pretrained
  logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True)
  path, cache, ready, jobs = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
  compile_cache.configure(True, cache, min_compile_secs=0.0)
  build = lambda: nnx.Linear(4, 3, rngs=nnx.Rngs(0))
  def pretrain(model, resume_dir):
    time.sleep(1.5)
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda p: p * 0.5 + 1.0, params))
    return {"by": __import__("os").getpid()}
  jax.jit(lambda x: x * 2 + 1)(np.ones(5)).block_until_ready()  # every job compiles the same program
  ready.mkdir(exist_ok=True)
  (ready / str(__import__("os").getpid())).touch()
  while len(list(ready.iterdir())) < jobs:
    time.sleep(0.02)
  model, meta, how = pretrained.obtain(path, build, pretrain, label="gap/translate/s0", wait_timeout_s=120)
  leaves = [np.asarray(v).tobytes() for v in jax.tree.leaves(nnx.state(model))]
  print(json.dumps({"how": how, "state": hashlib.sha256(b"".join(leaves)).hexdigest(), "by": meta["by"]}))
""")


def _model(scale=None):
  model = ShiftNet(num_classes=3, canvas_size=16, widths=(4,), head="gap", rngs=nnx.Rngs(0))
  if scale is not None:
    nnx.update(model, jax.tree.map(lambda p: p * scale, nnx.state(model, nnx.Param)))
  return model


def _leaves(model):
  return [np.asarray(v) for v in jax.tree.leaves(nnx.state(model))]


def test_jobs_on_an_empty_cache_pretrain_once_and_all_get_the_same_model(tmp_path, jobs=6):
  path = tmp_path / "ckpt" / "gap-translate-s0-0123456789abcdef"
  args = [str(path), str(tmp_path / "jax_cache"), str(tmp_path / "ready"), str(jobs)]
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", WORKER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )
    for _ in range(jobs)
  ]
  outs = [p.communicate(timeout=240) for p in procs]
  for p, (_out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  results = [json.loads(out.splitlines()[-1]) for out, _ in outs]
  logs = "".join(err for _, err in outs)
  hows = sorted(r["how"] for r in results)
  assert hows.count("pretrained") == 1 and set(hows) <= {"pretrained", "waited", "restored"}, hows
  assert logs.count("pretrained here in") == 1 and logs.count("waited for another job") == hows.count("waited")
  assert hows.count("waited") >= 1  # they really started together, and waited rather than trained
  assert len({r["state"] for r in results}) == 1 and len({r["by"] for r in results}) == 1
  assert "corrupted" not in logs and "removing the checkpoint" not in logs and "gave up" not in logs
  assert "Error reading persistent compilation cache" not in logs and "Error writing" not in logs
  assert (tmp_path / "jax_cache" / ".lockfile").is_file()  # JAX's cache locks its reads and writes
  assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary or resume leftovers
  pretrained.verify(path)


def _hold(lock_file: Path):
  """Takes a lock the way another process would: flock on a descriptor of our own."""
  lock_file.parent.mkdir(parents=True, exist_ok=True)
  fd = os.open(lock_file, os.O_RDWR | os.O_CREAT)
  fcntl.flock(fd, fcntl.LOCK_EX)
  return fd


def test_a_waiting_job_gives_up_after_its_timeout_and_says_so(tmp_path, caplog):
  path = tmp_path / "ckpt" / "gap-translate-s0-x"
  fd = _hold(cache.lock_path(path))
  calls = []
  try:
    with caplog.at_level(logging.INFO, logger="shiftbench.training.checkpoints"):
      start = time.perf_counter()
      _, _, how = pretrained.obtain(
        path, _model, lambda m, d: calls.append(d) or {"by": "me"}, label="x", wait_timeout_s=1.0
      )
    assert 1.0 <= time.perf_counter() - start < 30
  finally:
    os.close(fd)
  assert how == "pretrained-after-timeout" and calls == [None]  # no resume directory: that is the holder's
  assert "waiting for" in caplog.text and "gave up waiting after 1 s" in caplog.text
  assert pretrained.verify(path)["by"] == "me"  # published by rename: the holder keeps its own when it ends


def test_publishing_never_replaces_a_checkpoint_that_exists(tmp_path):
  path = tmp_path / "ck"
  assert pretrained.publish(path, _model(2.0), {"by": "first"})
  before = hashing.sha256_tree(path)
  assert not pretrained.publish(path, _model(3.0), {"by": "second"})
  assert hashing.sha256_tree(path) == before and pretrained.verify(path)["by"] == "first"
  assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # the loser's temporary directory is gone


def test_a_corrupted_checkpoint_is_replaced_under_its_lock_and_only_there(tmp_path, caplog):
  path = tmp_path / "ckpt" / "m"
  pretrained.publish(path, _model(2.0), {"by": "old"})
  biggest = max((p for p in (path / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  data = bytearray(biggest.read_bytes())
  data[len(data) // 2] ^= 1
  biggest.write_bytes(bytes(data))
  fd = _hold(cache.lock_path(path))  # another job holds the lock: the bad copy is left to it
  try:
    pretrained.obtain(path, _model, lambda m, d: {"by": "impatient"}, label="m", wait_timeout_s=0.5)
    assert biggest.read_bytes() == bytes(data)
  finally:
    os.close(fd)
  with caplog.at_level(logging.INFO, logger="shiftbench.training.checkpoints"):
    model, meta, how = pretrained.obtain(path, _model, lambda m, d: {"by": "new"}, label="m", wait_timeout_s=5)
  assert how == "pretrained" and meta["by"] == "new" and pretrained.verify(path)["by"] == "new"
  assert "does not match its sha256 (corrupted): removing the checkpoint and pretraining it again" in caplog.text
  assert [p.name for p in path.parent.iterdir()] == ["m"]
  restored, _, how = pretrained.obtain(path, _model, lambda m, d: pytest.fail("trained again"), label="m")
  assert how == "restored"
  for a, b in zip(_leaves(restored), _leaves(model)):
    np.testing.assert_array_equal(a, b)


def test_an_unwritable_lock_directory_is_a_cache_error(tmp_path):
  (tmp_path / "ckpt.locks").write_text("a file where the lock directory goes")
  with pytest.raises(CacheError, match="cannot create the checkpoint lock directory"):
    pretrained.obtain(tmp_path / "ckpt" / "m", _model, lambda m, d: {}, label="m")


HOLDER = (
  "import sys, time; from pathlib import Path; from shiftbench.infra import locks\n"
  "with locks.run_dir(Path(sys.argv[1])):\n  print('held', flush=True); time.sleep(120)\n"
)


def test_a_busy_run_directory_refuses_at_once_naming_the_process_and_a_dead_ones_lock_does_not_block(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=ENV)
  try:
    assert holder.stdout.readline().strip() == "held"
    start = time.perf_counter()
    with (
      pytest.raises(locks.Busy, match=f"in use by pid {holder.pid} on host {socket.gethostname()}"),
      locks.run_dir(tmp_path),
    ):
      pass
    # Refused, not queued: waiting would mean until the holder ends (120 s). A bound, not a speed target.
    assert time.perf_counter() - start < 60
  finally:
    holder.send_signal(signal.SIGKILL)  # no clean-up: its owner file stays behind, stale
    holder.wait()
  assert Path(f"{tmp_path / locks.RUN_LOCK}.owner").is_file()
  with locks.run_dir(tmp_path):  # the kernel dropped the dead process's lock
    assert json.loads(Path(f"{tmp_path / locks.RUN_LOCK}.owner").read_text())["pid"] == os.getpid()
    with locks.run_dir(tmp_path):  # nested in one process (the CLI's callback, then the task): fine
      pass
  assert not Path(f"{tmp_path / locks.RUN_LOCK}.owner").exists()
