"""Pretrained models, trained once and shared by every fine-tune that needs them (orbax checkpoints).

A checkpoint's directory name carries a hash of everything that determines it (model spec, dataset A,
canvas, pretraining settings, seed, shiftbench version), so runs, sweeps and SLURM jobs that need the
same pretrained network restore one copy and a changed setting can never pick up a stale one. Orbax
writes to a temporary directory and renames it when complete, so an interrupted save leaves nothing
that a later run would mistake for a checkpoint.

`meta.json` carries a sha256 of every file of the saved state and one of its own content, both checked
before a restore: a flipped bit or a truncated file is found before its bytes reach a model
(`verify`), and the caller trains the model again instead of continuing on bad bytes. The synchronous
orbax checkpointer is used on purpose: the asynchronous one leaves a non-daemon thread behind when a
save fails, and the interpreter then never exits.

Jobs that share the cache (a sweep's first wave on a cluster) go through `obtain`: it restores a
published checkpoint without locking; otherwise one job pretrains under a per-checkpoint lock
(`locks.held`) while the others wait for it and restore what it published. A checkpoint is written into
a private temporary directory beside its final place and published by one `rename`, which fails rather
than replace a directory that exists, so no job ever overwrites or deletes another's checkpoint. Only a
checkpoint that fails `verify` is moved away, and only under its lock.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp
from flax import nnx

from shiftbench import __version__, locks
from shiftbench.errors import CacheError
from shiftbench.results import write_json

_SELF_HASH = "meta_sha256"  # meta.json's own hash: of its canonical JSON without this key

log = logging.getLogger(__name__)


def checkpoint_key(description: dict[str, Any]) -> str:
  """A stable short hash of the JSON form of `description` (plus the package version)."""
  blob = json.dumps({"shiftbench": __version__, **description}, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoint_path(checkpoint_dir: str | Path, name: str, description: dict[str, Any]) -> Path:
  return Path(checkpoint_dir).expanduser().absolute() / f"{name}-{checkpoint_key(description)}"


def exists(path: Path) -> bool:
  return (path / "state").is_dir() and (path / "meta.json").is_file()


def file_hashes(directory: Path) -> dict[str, str]:
  """sha256 of every file under `directory`, keyed by its path relative to it."""
  out = {}
  for f in sorted(p for p in directory.rglob("*") if p.is_file()):
    digest = hashlib.sha256()
    with f.open("rb") as fh:
      for block in iter(lambda: fh.read(1 << 20), b""):
        digest.update(block)
    out[f.relative_to(directory).as_posix()] = digest.hexdigest()
  return out


def _canonical_hash(meta: dict[str, Any]) -> str:
  body = {k: v for k, v in meta.items() if k != _SELF_HASH}
  return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode()).hexdigest()


def _bad(path: Path, problem: str) -> CacheError:
  """A `CacheError` for a checkpoint that cannot be used; `problem` alone is kept for `_move_aside`'s line."""
  error = CacheError(f"{problem}; delete the checkpoint (rm -rf {path}) and run again to pretrain it afresh")
  error.problem, error.corrupted = problem, True
  return error


def save(path: Path, model: nnx.Module, meta: dict[str, Any]) -> None:
  """Saves the model state, then `meta.json` last (with the state's hashes): its presence marks a
  complete checkpoint. Any failure is a `CacheError` naming the path."""
  state = nnx.state(model)
  try:
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as ckpt:
      ckpt.save(path / "state", state)
    meta = json.loads(json.dumps({**meta, "state_sha256": file_hashes(path / "state")}, default=str))
    meta[_SELF_HASH] = _canonical_hash(meta)
    write_json(path / "meta.json", meta)
  except Exception as e:  # orbax wraps OS errors in several types; all mean the same to the user
    raise CacheError(
      f"cannot save the pretrained checkpoint {path} ({type(e).__name__}: {e}); make "
      "paths.checkpoint_dir (or $SHIFTBENCH_CACHE) a writable directory"
    ) from e


def verify(path: Path) -> dict[str, Any]:
  """The checkpoint's metadata if every hash matches, else a `CacheError` naming the bad file."""
  meta_file = path / "meta.json"
  try:
    meta = json.loads(meta_file.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise _bad(path, f"checkpoint metadata {meta_file} is unreadable ({e})") from e
  if not isinstance(meta, dict) or _SELF_HASH not in meta or "state_sha256" not in meta:
    raise _bad(path, f"checkpoint metadata {meta_file} has no content hash (written by an older shiftbench or altered)")
  if meta[_SELF_HASH] != _canonical_hash(meta):
    raise _bad(path, f"checkpoint metadata {meta_file} does not match its sha256 (corrupted)")
  expected, actual = meta["state_sha256"], file_hashes(path / "state")
  for name in sorted(set(expected) | set(actual)):
    if expected.get(name) != actual.get(name):
      what = (
        "is missing"
        if name not in actual
        else ("is unexpected" if name not in expected else "does not match its sha256 (corrupted)")
      )
      raise _bad(path, f"checkpoint file {path / 'state' / name} {what}")
  return meta


def _mismatch(path: Path, saved: Any, wanted: Any, why: str) -> CacheError:
  """A checkpoint that is intact but is not the model asked for: an error naming both, never a deletion."""
  return CacheError(
    f"the pretrained checkpoint {path} {why}: it was saved for {json.dumps(saved, default=str)}, "
    f"this run wants {json.dumps(wanted, default=str)}; use another paths.checkpoint_dir or remove it "
    "yourself if it is yours"
  )


def restore(path: Path, model: nnx.Module, description: dict[str, Any] | None = None) -> dict[str, Any]:
  """Verifies the checkpoint's hashes, checks it was saved for `description` (when given), loads the saved
  state into `model` (same architecture) and returns the saved metadata.

  A corrupted checkpoint raises a `CacheError` with `corrupted = True` (the caller makes it again); one that
  is intact but holds another model raises one without it, naming both descriptions."""
  meta = verify(path)
  saved = meta.get("description")
  wanted = None if description is None else json.loads(json.dumps(description, default=str))
  if wanted is not None and saved != wanted:
    raise _mismatch(path, saved, wanted, "holds another model under this key")
  abstract = nnx.state(model)
  try:
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as ckpt:
      state = ckpt.restore(path / "state", abstract)
  except Exception as e:  # a checkpoint of another architecture: intact bytes, wrong shapes
    raise _mismatch(
      path, saved, wanted, f"cannot be restored into this model ({type(e).__name__}: {str(e)[:200]})"
    ) from e
  nnx.update(model, state)
  return meta


def lock_path(path: Path) -> Path:
  """The lock file of checkpoint `path`: in `<checkpoint_dir>.locks/`, beside the cache rather than in it,
  so that the cache directory holds checkpoints only."""
  return path.parent.with_name(path.parent.name + ".locks") / f"{path.name}.lock"


def resume_dir(path: Path) -> Path:
  """Where the pretraining of `path` keeps its periodic checkpoints until it is published."""
  return path.with_name(f".{path.name}.resume")


def publish(path: Path, model: nnx.Module, meta: dict[str, Any]) -> bool:
  """Saves into a private temporary directory beside `path` and renames it into place.

  Returns:
    True if this call published `path`; False if a checkpoint was already there (another job's: it
    is kept, and this one dropped).
  """
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
  except OSError as e:
    raise CacheError(
      f"cannot save the pretrained checkpoint {path} ({type(e).__name__}: {e}); make "
      "paths.checkpoint_dir (or $SHIFTBENCH_CACHE) a writable directory"
    ) from e
  try:
    save(tmp, model, meta)
    try:
      os.rename(tmp, path)  # atomic; fails on a non-empty directory instead of replacing it
      return True
    except OSError as e:
      if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
        raise CacheError(f"cannot publish the pretrained checkpoint {path} ({e.strerror or e})") from e
      return False
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _move_aside(path: Path, reason: CacheError) -> None:
  """Takes a checkpoint that failed `verify` out of its place (by rename, so a new one can be published
  at once) and deletes it; called only under its lock."""
  log.warning("%s: removing the checkpoint and pretraining it again", getattr(reason, "problem", reason))
  aside = path.with_name(f".{path.name}.bad-{os.getpid()}-{time.time_ns()}")
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return
  except OSError as e:
    raise CacheError(f"{reason} (and moving it away failed: {e.strerror or e})") from e
  shutil.rmtree(aside, ignore_errors=True)


def obtain(
  path: Path,
  build: Callable[[], nnx.Module],
  pretrain: Callable[[nnx.Module, Path | None], dict[str, Any]],
  *,
  label: str,
  description: dict[str, Any] | None = None,
  wait_timeout_s: float = 7200.0,
) -> tuple[nnx.Module, dict[str, Any], str]:
  """The pretrained model of checkpoint `path`: restored, waited for, or pretrained here and published.

  Args:
    path: the checkpoint directory (`checkpoint_path`).
    build: makes the freshly initialised model.
    pretrain: trains a fresh model in place and returns its metadata; its second argument is the
      directory for periodic resumable checkpoints, or None when this job does not hold the lock.
    label: names the model in the log line.
    description: what the checkpoint must have been saved for (`restore`); an intact checkpoint of another
      model is an error naming both, never replaced.
    wait_timeout_s: how long to wait for another job pretraining the same checkpoint before pretraining
      here too (< 0: wait for ever).

  Returns:
    (model, metadata, how), how one of `restored`, `waited`, `pretrained`, `pretrained-after-timeout`.
    One INFO line per call says which and how long it took.
  """
  start = time.perf_counter()
  model = build()
  bad = False
  if exists(path):
    try:
      meta = restore(path, model, description)
      log.info("pretrained %s: restored from %s in %.1f s", label, path, time.perf_counter() - start)
      return model, meta, "restored"
    except CacheError as e:
      if not getattr(e, "corrupted", False):
        raise
      bad = True  # what to do is decided under the lock: another job may be replacing it already
  lock = lock_path(path)
  try:
    lock.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise CacheError(
      f"cannot create the checkpoint lock directory {lock.parent} ({e.strerror or e}); make "
      "paths.checkpoint_dir (or $SHIFTBENCH_CACHE) a writable directory"
    ) from e
  waiting = time.perf_counter()
  busy = not locks.is_free(lock)
  if busy:
    log.info(
      "pretrained %s: waiting for %s, which is pretraining it (up to %s s)",
      label,
      locks.owner_text(lock),
      "ever" if wait_timeout_s < 0 else f"{wait_timeout_s:.0f}",
    )
  with locks.held(lock, wait_timeout_s) as holding:
    if holding and path.exists():  # published meanwhile, or the bad one seen above (or half of one)
      try:
        meta = restore(path, model, description)
        log.info(
          "pretrained %s: %s, restored from %s in %.1f s",
          label,
          "waited for another job" if busy else "replaced meanwhile",
          path,
          time.perf_counter() - start,
        )
        return model, meta, "waited" if busy or bad else "restored"
      except CacheError as e:
        if not getattr(e, "corrupted", False):
          raise
        _move_aside(path, e)
    if not holding:
      log.warning(
        "pretrained %s: gave up waiting after %.0f s for %s; pretraining it here as well",
        label,
        time.perf_counter() - waiting,
        locks.owner_text(lock),
      )
    model = build()  # a failed restore may have written part of a state into the first one
    meta = pretrain(model, resume_dir(path) if holding else None)
    published = publish(path, model, meta)
    if holding:
      shutil.rmtree(resume_dir(path), ignore_errors=True)
  how = "pretrained" if holding else "pretrained-after-timeout"
  log.info(
    "pretrained %s: pretrained here in %.1f s, %s %s",
    label,
    time.perf_counter() - start,
    "published to" if published else "another job had already published",
    path,
  )
  return model, meta, how
