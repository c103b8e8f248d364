"""Writing result files safely: atomic text and JSON, with numpy values made plain.

Every file is written to a temporary name in the same directory and renamed into place, so a crash or
a requeued SLURM job never leaves a half-written `results.json` (rename is atomic on POSIX).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


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
  if isinstance(value, np.ndarray) or (hasattr(value, "__array__") and not isinstance(value, np.generic)):
    return to_jsonable(np.asarray(value).tolist())  # numpy and jax arrays, without importing jax
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
