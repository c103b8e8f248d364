"""Pretrained models, trained once and shared by every fine-tune that needs them (orbax checkpoints).

A checkpoint's directory name carries a hash of everything that determines it (model spec, dataset A,
canvas, pretraining settings, seed, protocol version), so runs, sweeps and SLURM jobs that need the
same pretrained network restore one copy and a changed setting can never pick up a stale one. Orbax
writes to a temporary directory and renames it when complete, so an interrupted save leaves nothing
that a later run would mistake for a checkpoint.

`meta.json` carries a sha256 of every file of the saved state and one of its own content, both checked
before a restore: a flipped bit or a truncated file is found before its bytes reach a model
(`verify`), and the caller trains the model again instead of continuing on bad bytes. The synchronous
orbax checkpointer is used on purpose: the asynchronous one leaves a non-daemon thread behind when a
save fails, and the interpreter then never exits.

Jobs that share the cache (a sweep's first wave on a cluster) go through `obtain`, which is `cache.obtain`:
a published checkpoint is restored without locking; otherwise one job pretrains under the checkpoint's lock
while the others wait for it and restore what it published, and a checkpoint that fails `verify` is moved
aside and pretrained again, only under its lock. One that is intact but holds another model is an error
naming both, never deleted.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp
from flax import nnx

from shiftbench.infra import cache, hashing
from shiftbench.infra.errors import CacheError
from shiftbench.infra.files import write_json
from shiftbench.rows import comparison

_SELF_HASH = "meta_sha256"  # meta.json's own hash: of its canonical JSON without this key

log = logging.getLogger(__name__)
_KIND = cache.Kind(
  noun="checkpoint",
  making="pretraining",
  log=log,
  hint="make paths.checkpoint_dir (or $SHIFTBENCH_CACHE) a writable directory",
)


def checkpoint_key(description: dict[str, Any], protocol_version: str | None = None) -> str:
  """A stable short hash of `description` (plus the protocol version, `PROTOCOL_VERSION` unless given):
  names the checkpoint's directory. A release that keeps the protocol keeps its checkpoints."""
  return hashing.json_hash({"protocol_version": protocol_version or comparison.PROTOCOL_VERSION, **description}, 16)


def checkpoint_path(checkpoint_dir: str | Path, name: str, description: dict[str, Any]) -> Path:
  return Path(checkpoint_dir).expanduser().absolute() / f"{name}-{checkpoint_key(description)}"


def exists(path: Path) -> bool:
  return (path / "state").is_dir() and (path / "meta.json").is_file()


def _canonical_hash(meta: dict[str, Any]) -> str:
  return hashing.json_hash({k: v for k, v in meta.items() if k != _SELF_HASH})


def _bad(path: Path, problem: str) -> cache.Corrupt:
  """The error of a checkpoint that cannot be used: `obtain` moves it aside and pretrains it again."""
  return cache.Corrupt(problem, f"delete the checkpoint (rm -rf {path}) and run again to pretrain it afresh")


def save(path: Path, model: nnx.Module, meta: dict[str, Any]) -> None:
  """Saves the model state, then `meta.json` last (with the state's hashes): its presence marks a
  complete checkpoint. Any failure is a `CacheError` naming the path."""
  state = nnx.state(model)
  try:
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as ckpt:
      ckpt.save(path / "state", state)
    # allow_nan=False: meta.json is written without NaN (as null), so a NaN would never match its hash
    meta = json.dumps({**meta, "state_sha256": hashing.sha256_tree(path / "state")}, default=str, allow_nan=False)
    meta = json.loads(meta)
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
  expected, actual = meta["state_sha256"], hashing.sha256_tree(path / "state")
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


def resume_dir(path: Path) -> Path:
  """Where the pretraining of `path` keeps its periodic checkpoints until it is published."""
  return path.with_name(f".{path.name}.resume")


def publish(path: Path, model: nnx.Module, meta: dict[str, Any]) -> bool:
  """Saves into a private temporary directory beside `path` and renames it into place (`cache.build_and_publish`).

  Returns:
    True if this call published `path`; False if a checkpoint was already there (another job's: it
    is kept, and this one dropped).
  """
  return cache.build_and_publish(path, lambda target: save(target, model, meta), _KIND)[1]


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

  def load(entry: Path) -> tuple[nnx.Module, dict[str, Any]]:
    model = build()  # a fresh one per attempt: a failed restore must leave nothing in the model returned
    return model, restore(entry, model, description)

  def make(target: Path, locked: bool) -> tuple[nnx.Module, dict[str, Any]]:
    model = build()
    meta = pretrain(model, resume_dir(path) if locked else None)
    save(target, model, meta)
    return model, meta

  got = cache.obtain(
    path,
    make,
    load,
    kind=_KIND,
    label=f"pretrained {label}",
    lock_timeout=wait_timeout_s,
    cleanup=lambda: shutil.rmtree(resume_dir(path), ignore_errors=True),
  )
  (model, meta), seconds = got.value, time.perf_counter() - start
  if got.how == "found":
    log.info("pretrained %s: restored from %s in %.1f s", label, path, seconds)
    return model, meta, "restored"
  if got.how == "waited":
    log.info("pretrained %s: waited for another job, restored from %s in %.1f s", label, path, seconds)
    return model, meta, "waited"
  log.info(
    "pretrained %s: pretrained here in %.1f s, %s %s",
    label,
    seconds,
    "published to" if got.published else "another job had already published",
    path,
  )
  return model, meta, "pretrained" if got.how == "built" else "pretrained-after-timeout"
