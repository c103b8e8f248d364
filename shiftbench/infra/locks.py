"""Inter-process locks for what jobs share: the checkpoint cache, the glyph cache and a run directory.

Locks are `filelock.FileLock`s, i.e. `flock(2)` on a file beside the thing they guard. The kernel drops
such a lock when its process dies, however it dies (SIGKILL, a SLURM requeue, a node reboot), so a lock
left behind by a dead job never blocks the next one. On a cluster the cache must be on a filesystem whose
`flock` works across nodes (Lustre, GPFS, NFSv4; not NFSv3 mounted with `nolock`), see docs/slurm.md.

`filelock` truncates the lock file when it opens it, so who holds a lock (pid, host, since when) is kept
in a separate `<lock>.owner` file, written by the holder; it is information for messages, never trusted
as the lock itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import filelock

from shiftbench.infra.errors import ConfigError

log = logging.getLogger(__name__)
RUN_LOCK = ".shiftbench-run.lock"
# One FileLock object per path and process: a second `flock` on another descriptor of the same file
# would block on the process's own lock, so nested users (CLI callback, then the task) share one.
_LOCKS: dict[str, filelock.FileLock] = {}


class Busy(ConfigError):
  """A run directory already in use by a live process."""


def _lock(path: Path) -> filelock.FileLock:
  key = str(path.absolute())
  if key not in _LOCKS:
    _LOCKS[key] = filelock.FileLock(key, thread_local=False)
  return _LOCKS[key]


def owner_text(lock_path: Path) -> str:
  """`pid N on host H since T` from a lock's owner file, or `another process` when there is none."""
  try:
    info = json.loads(Path(f"{lock_path}.owner").read_text())
    since = time.strftime("%H:%M:%S", time.localtime(info["since"]))
    return f"pid {info['pid']} on host {info['host']} since {since}"
  except (OSError, ValueError, KeyError, TypeError):
    return "another process"


def _write_owner(lock_path: Path) -> None:
  info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
  tmp = Path(f"{lock_path}.owner.{os.getpid()}")
  tmp.write_text(json.dumps(info))
  os.replace(tmp, f"{lock_path}.owner")


def _clear_owner(lock_path: Path) -> None:
  with contextlib.suppress(OSError):
    Path(f"{lock_path}.owner").unlink()


@contextlib.contextmanager
def held(lock_path: Path, timeout: float) -> Iterator[bool]:
  """Holds the lock at `lock_path` for the block, waiting up to `timeout` seconds (< 0: forever).

  Yields:
    True if the lock is held; False if it was still taken by another process after `timeout` (the
    block then runs without it, and must not touch what the lock guards in place).
  """
  lock = _lock(lock_path)
  try:
    lock.acquire(timeout=timeout)
  except filelock.Timeout:
    yield False
    return
  try:
    if lock.lock_counter == 1:
      _write_owner(lock_path)
    yield True
  finally:
    if lock.lock_counter == 1:
      _clear_owner(lock_path)
    lock.release()


def is_free(lock_path: Path) -> bool:
  """Whether no other process holds the lock now (a probe: the answer may change at once)."""
  lock = _lock(lock_path)
  if lock.is_locked:
    return True  # held by this process, which may go on
  try:
    lock.acquire(timeout=0)
  except filelock.Timeout:
    return False
  lock.release()
  return True


@contextlib.contextmanager
def run_dir(path: Path) -> Iterator[None]:
  """Holds the run directory's lock for the block, or raises `Busy` at once naming its holder.

  One process per run directory: a second `shiftbench` on the same directory (the same command started
  twice, or a requeued job while the old one still runs) would rewrite the same `results.json`. Nested
  holds in one process share one lock (`shiftbench.runs.run_dir` opens it once).
  """
  lock_path = Path(path) / RUN_LOCK
  lock = _lock(lock_path)
  try:
    lock.acquire(timeout=0)
  except filelock.Timeout:
    raise Busy(
      f"run directory {path} is in use by {owner_text(lock_path)}; wait for it to finish, or choose "
      "another hydra.run.dir"
    ) from None
  try:
    if lock.lock_counter == 1:
      _write_owner(lock_path)
    yield
  finally:
    if lock.lock_counter == 1:
      _clear_owner(lock_path)
    lock.release()
