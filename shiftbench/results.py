"""Writing results safely and recording where they came from.

Every file is written to a temporary name in the same directory and renamed into place, so a crash or
a requeued SLURM job never leaves a half-written `results.json` (rename is atomic on POSIX).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

_PACKAGES = (
  "shiftbench",
  "jax",
  "jaxlib",
  "flax",
  "optax",
  "orbax-checkpoint",
  "tensorflow-datasets",
  "hydra-core",
  "wandb",
  "numpy",
)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
  """Writes `text` to `path` atomically (temp file + fsync + rename)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600; a shared cache needs the usual mode
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise
  return path


def _umask() -> int:
  """The process umask, read without changing it where Linux allows (os.umask sets it to read it)."""
  try:
    for line in Path("/proc/self/status").read_text().splitlines():
      if line.startswith("Umask:"):
        return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def to_jsonable(value: Any) -> Any:
  """numpy/jax scalars and arrays to Python; NaN/inf to None (JSON has no NaN)."""
  if isinstance(value, dict):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, (np.ndarray, jax.Array)):
    return to_jsonable(np.asarray(value).tolist())
  if isinstance(value, (np.floating, float)):
    value = float(value)
    return value if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.bool_):
    return bool(value)
  return value


def write_json(path: str | os.PathLike, data: Any) -> Path:
  return atomic_write_text(path, json.dumps(to_jsonable(data), indent=1, allow_nan=False) + "\n")


def environment() -> dict[str, Any]:
  """Package versions, Python, platform and the JAX devices a result was computed on."""
  versions = {}
  for name in _PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  # The code that ran, not what pip last recorded: an editable install keeps the metadata of the version
  # it was installed at.
  from shiftbench import __version__

  versions["shiftbench"] = __version__
  devices = jax.devices()
  return {
    "versions": versions,
    "python": platform.python_version(),
    "platform": platform.platform(),
    "backend": jax.default_backend(),
    "devices": [f"{d.platform}:{d.device_kind}" for d in devices],
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def load_rows(paths: list[str | os.PathLike]) -> Any:
  """Every row of every `results.json` under `paths` (files or directories) as the tidy table of
  `shiftbench.tidy`, a `pandas.DataFrame`: one line per results row, undefined values as NaN. Needs pandas
  (`pip install pandas`, or the `analysis` extra)."""
  try:
    import pandas as pd
  except ImportError as e:
    raise ImportError("shiftbench.results.load_rows returns a pandas DataFrame: pip install pandas") from e
  from shiftbench import leaderboard, tidy  # both import this module

  columns, values = tidy.table(leaderboard.collect(paths))
  return pd.DataFrame(values, columns=columns)
