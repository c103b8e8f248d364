"""The sha256 digests shiftbench names and checks things by: files, directory trees, JSON values, arrays.

One definition of each, because some of them are written into result rows (`json_hash` gives the
comparison keys, `sha256_arrays` the dataset hashes) and must never drift between callers. Only the
standard library is imported at module level, so the cache layer (`cache.py`, `published_weights.py`)
stays free of numpy and jax.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  import numpy as np

CHUNK = 1 << 20  # bytes read at a time: a file of any size is hashed in constant memory


def sha256_file(path: str | os.PathLike[str]) -> str:
  """The hex sha256 of the file at `path`."""
  digest = hashlib.sha256()
  with open(path, "rb") as fh:
    for block in iter(lambda: fh.read(CHUNK), b""):
      digest.update(block)
  return digest.hexdigest()


def sha256_tree(directory: str | os.PathLike[str]) -> dict[str, str]:
  """The sha256 of every file under `directory`, keyed by its POSIX path relative to it, in sorted order.

  Returns:
    {relative path: hex digest}; empty when `directory` holds no files (or does not exist).
  """
  root = Path(directory)
  return {f.relative_to(root).as_posix(): sha256_file(f) for f in sorted(p for p in root.rglob("*") if p.is_file())}


def json_hash(value: Any, length: int | None = None) -> str:
  """The hex sha256 of `value`'s canonical JSON, cut to its first `length` digits (None: all 64).

  Canonical: keys sorted, no whitespace, anything JSON cannot hold written as `str()` of it. The comparison
  keys of result rows are these digests, so this form is fixed: changing it changes every key.
  """
  blob = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
  return hashlib.sha256(blob.encode()).hexdigest()[:length]


def sha256_arrays(*arrays: np.ndarray, names: tuple[str, ...] = ()) -> str:
  """The hex sha256 of arrays' dtypes, shapes and bytes, in order, then of `names` (e.g. class names).

  Written into result rows as a dataset's content hash (`protocol_data.dataset_hash`), so its form is fixed.
  """
  import numpy as np  # only here: the file and JSON hashes serve callers that must not need numpy

  digest = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    digest.update(f"{a.dtype.str}{a.shape}".encode())
    digest.update(memoryview(a).cast("B"))
  digest.update("\x1f".join(names).encode())
  return digest.hexdigest()
