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
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp
from flax import nnx

from shiftbench import __version__
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
  """A `CacheError` for a checkpoint that cannot be used; `problem` alone is kept for `discard`'s line."""
  error = CacheError(f"{problem}; delete the checkpoint (rm -rf {path}) and run again to pretrain it afresh")
  error.problem, error.corrupted = problem, True
  return error


def save(path: Path, model: nnx.Module, meta: dict[str, Any]) -> None:
  """Saves the model state, then `meta.json` last (with the state's hashes): its presence marks a
  complete checkpoint. Any failure is a `CacheError` naming the path."""
  state = nnx.state(model)
  try:
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as ckpt:
      ckpt.save(path / "state", state, force=True)
    meta = json.loads(json.dumps({**meta, "state_sha256": file_hashes(path / "state")}, default=str))
    meta[_SELF_HASH] = _canonical_hash(meta)
    write_json(path / "meta.json", meta)
  except Exception as e:  # orbax wraps OS errors in several types; all mean the same to the user
    raise CacheError(f"cannot save the pretrained checkpoint {path} ({type(e).__name__}: {e}); make "
                     "paths.checkpoint_dir (or $SHIFTBENCH_CACHE) a writable directory") from e


def verify(path: Path) -> dict[str, Any]:
  """The checkpoint's metadata if every hash matches, else a `CacheError` naming the bad file."""
  meta_file = path / "meta.json"
  try:
    meta = json.loads(meta_file.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise _bad(path, f"checkpoint metadata {meta_file} is unreadable ({e})") from e
  if not isinstance(meta, dict) or _SELF_HASH not in meta or "state_sha256" not in meta:
    raise _bad(path, f"checkpoint metadata {meta_file} has no content hash (written by an older shiftbench "
                     "or altered)")
  if meta[_SELF_HASH] != _canonical_hash(meta):
    raise _bad(path, f"checkpoint metadata {meta_file} does not match its sha256 (corrupted)")
  expected, actual = meta["state_sha256"], file_hashes(path / "state")
  for name in sorted(set(expected) | set(actual)):
    if expected.get(name) != actual.get(name):
      what = "is missing" if name not in actual else ("is unexpected" if name not in expected else
                                                      "does not match its sha256 (corrupted)")
      raise _bad(path, f"checkpoint file {path / 'state' / name} {what}")
  return meta


def discard(path: Path, reason: CacheError) -> None:
  """Removes a checkpoint that failed `verify`, saying so in one line; a `CacheError` if it cannot."""
  log.warning("%s: removing the checkpoint and pretraining it again", getattr(reason, "problem", reason))
  try:
    shutil.rmtree(path)
  except OSError as e:
    raise CacheError(f"{reason} (and removing it failed: {e.strerror or e})") from e


def _mismatch(path: Path, saved: Any, wanted: Any, why: str) -> CacheError:
  """A checkpoint that is intact but is not the model asked for: an error naming both, never a deletion."""
  return CacheError(f"the pretrained checkpoint {path} {why}: it was saved for {json.dumps(saved, default=str)}, "
                    f"this run wants {json.dumps(wanted, default=str)}; use another paths.checkpoint_dir or remove it "
                    "yourself if it is yours")


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
    raise _mismatch(path, saved, wanted, f"cannot be restored into this model ({type(e).__name__}: "
                    f"{str(e)[:200]})") from e
  nnx.update(model, state)
  return meta
