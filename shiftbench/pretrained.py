"""Pretrained models, trained once and shared by every fine-tune that needs them (orbax checkpoints).

A checkpoint's directory name carries a hash of everything that determines it (model spec, dataset A,
canvas, pretraining settings, seed, shiftbench version), so runs, sweeps and SLURM jobs that need the
same pretrained network restore one copy and a changed setting can never pick up a stale one. Orbax
writes to a temporary directory and renames it when complete, so an interrupted save leaves nothing
that a later run would mistake for a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp
from flax import nnx

from shiftbench import __version__
from shiftbench.results import write_json

log = logging.getLogger(__name__)


def checkpoint_key(description: dict[str, Any]) -> str:
  """A stable short hash of the JSON form of `description` (plus the package version)."""
  blob = json.dumps({"shiftbench": __version__, **description}, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoint_path(checkpoint_dir: str | Path, name: str, description: dict[str, Any]) -> Path:
  return Path(checkpoint_dir).expanduser().absolute() / f"{name}-{checkpoint_key(description)}"


def exists(path: Path) -> bool:
  return (path / "state").is_dir() and (path / "meta.json").is_file()


def save(path: Path, model: nnx.Module, meta: dict[str, Any]) -> None:
  """Saves the model state, then `meta.json` last: its presence marks a complete checkpoint."""
  state = nnx.state(model)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(path / "state", state, force=True)
    ckpt.wait_until_finished()
  write_json(path / "meta.json", meta)


def restore(path: Path, model: nnx.Module) -> dict[str, Any]:
  """Loads the saved state into `model` (same architecture) and returns the saved metadata."""
  abstract = nnx.state(model)
  with ocp.StandardCheckpointer() as ckpt:
    state = ckpt.restore(path / "state", abstract)
  nnx.update(model, state)
  return json.loads((path / "meta.json").read_text())
