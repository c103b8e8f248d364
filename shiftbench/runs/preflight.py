"""Checks that run before any data is loaded or any step trained, so a bad run fails in seconds.

Each raises a `ConfigError` whose one-line message names the key or path at fault and what to do.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from shiftbench.infra.errors import ConfigError


def check_launcher(target: str | None, choice: str | None = None) -> None:
  """A SLURM launcher (`hydra/launcher=slurm`, `slurm_local` or a subclass: its `_target_`) needs SLURM's
  `sbatch` and `srun` on PATH; without them submitit fails deep in the launch ("Could not detect srun")."""
  from hydra.utils import get_class
  from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

  try:
    slurm = target is not None and issubclass(get_class(target), SlurmLauncher)
  except Exception:  # not a class Hydra can locate: Hydra reports that itself when it builds the launcher
    return
  missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
  if slurm and missing:
    absent = f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on PATH"
    raise ConfigError(
      f"hydra/launcher={choice or target} submits the jobs to SLURM, but {absent}: run on a SLURM login node, "
      "or install SLURM (docs/slurm.md; scripts/slurm_local.sh starts a one-node cluster), or use "
      "hydra/launcher=local (the jobs one after another here) or hydra/launcher=local_gpus (one job per GPU "
      "of this machine)"
    )


def check_writable(path: str | os.PathLike, what: str, hint: str) -> Path:
  """Creates `path` if needed and writes a probe file in it; a `ConfigError` naming it if that fails."""
  path = Path(path).expanduser().absolute()
  try:
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
      pass
  except OSError as e:
    raise ConfigError(f"{what} {path} is not writable ({e.strerror or e}); {hint}") from e
  return path


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
  """Dotted keys whose values differ between two plain config trees (added and removed keys too)."""
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in sorted(set(old) | set(new), key=str):
      out += config_diff(old.get(key, "<absent>"), new.get(key, "<absent>"), f"{prefix}{key}.")
    return out
  return [] if old == new else [prefix.rstrip(".")]
