"""`load_glyphs`: the generated glyph dataset, rendered once per setting and cached as plain arrays.

The cache is a directory per setting under `<data_dir>/shiftbench_glyph_cache/`, named after everything
that determines its bytes: charset, the selected classes, image size, samples per class, seed, and a
fingerprint of the renderer (its version, matplotlib's font files, Pillow and FreeType, numpy). Its
`meta.json` carries a SHA-256 of the arrays, written when they are saved and checked on every load, so
a truncated, edited or otherwise stale file is never served: it is rendered again, with one warning.
Only the selected classes are rendered, in parallel over the available cores (`glyphs.render_split`).
No TensorFlow or tensorflow-datasets is needed; `glyphs_builder.ShiftbenchGlyphs` wraps the same
renderer as a TFDS dataset for those who want one.

Jobs that start together on one cache (a sweep's first wave) render each setting once: the first takes
the setting's lock (in `shiftbench_glyph_cache.locks/`) and renders, the others wait and read its copy.
An entry is published by renaming a complete temporary directory into place, and one that failed its
check is moved away only under the lock, so no reader ever sees half an entry or loses one it reads.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
from PIL import features

from shiftbench import locks
from shiftbench.data import glyphs
from shiftbench.data.objects import ObjectSet, class_indices

log = logging.getLogger(__name__)

# Bump whenever rendering in glyphs.py changes what a sample looks like (the fingerprint covers the
# libraries and fonts, not this package's code).
RENDER_VERSION = 2
CACHE_SUBDIR = "shiftbench_glyph_cache"
_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


@functools.cache
def fingerprint() -> str:
  """A short hash of what, besides the settings, determines the rendered bytes."""
  fonts = [(Path(p).name, os.path.getsize(p)) for p in glyphs.font_paths()]
  parts = [
    RENDER_VERSION,
    fonts,
    PIL.__version__,
    features.version("freetype2"),
    ".".join(np.__version__.split(".")[:2]),
  ]
  return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:10]


def default_data_dir() -> str:
  """TFDS's default data dir, without importing TFDS: `$TFDS_DATA_DIR` or `~/tensorflow_datasets`."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def content_hash(arrays: dict[str, np.ndarray]) -> str:
  """SHA-256 over every array's name, dtype, shape and bytes."""
  h = hashlib.sha256()
  for name in _ARRAYS:
    a = np.ascontiguousarray(arrays[name])
    h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
    h.update(a.data)
  return h.hexdigest()


def cache_path(
  data_dir: str | os.PathLike[str] | None,
  charset: str,
  chars: str,
  train_per_class: int,
  test_per_class: int,
  image_size: int,
  seed: int,
) -> Path:
  """The cache directory of one setting (absolute: Hydra may change the working directory)."""
  root = Path(os.path.expanduser(os.fspath(data_dir or default_data_dir()))).absolute()
  name = f"{charset}-{chars}-{image_size}px-{train_per_class}x{test_per_class}-s{seed}-r{fingerprint()}"
  return root / CACHE_SUBDIR / name


def _read(path: Path, quiet: bool = False) -> dict[str, np.ndarray] | None:
  """The cached arrays, or None (with a one-line warning, unless `quiet`, if something was there but fails
  its check)."""
  meta_file = path / "meta.json"
  if not meta_file.is_file():
    return None
  try:
    meta = json.loads(meta_file.read_text())
    with np.load(path / "arrays.npz") as f:
      arrays = {k: f[k] for k in _ARRAYS}
    if content_hash(arrays) == meta["sha256"]:
      return arrays
    why = "its content hash does not match meta.json"
  except (OSError, ValueError, KeyError) as e:  # unreadable, truncated or malformed
    why = f"it cannot be read ({type(e).__name__}: {e})"
  if not quiet:
    log.warning("glyph cache %s failed its check (%s); rendering it again", path, why)
  return None


def _write(path: Path, arrays: dict[str, np.ndarray], settings: dict) -> None:
  """Writes into a temporary sibling, then renames it into place: readers never see half a cache."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
  try:
    np.savez(tmp / "arrays.npz", **arrays)
    meta = {"sha256": content_hash(arrays), "settings": settings, "fingerprint": fingerprint()}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if path.exists():  # a stale entry that failed its check (we hold its lock): out of the way, by rename
      aside = path.with_name(f".{path.name}.bad-{os.getpid()}-{time.time_ns()}")
      os.rename(path, aside)
      shutil.rmtree(aside, ignore_errors=True)
    try:
      os.rename(tmp, path)
    except OSError:
      if not (path / "meta.json").is_file():  # else a job without the lock (read-only locks) was first
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def load_glyphs(
  charset: str = "digits",
  classes: list[str] | None = None,
  train_per_class: int = 500,
  test_per_class: int = 100,
  image_size: int = 32,
  seed: int = 0,
  data_dir: str | None = None,
  workers: int | None = None,
) -> ObjectSet:
  """Loads generated glyphs, rendering and caching them under `data_dir` the first time.

  Args:
    charset: "digits" (0-9), "letters" (A-Z) or "lowercase" (a-z).
    classes: characters to keep, e.g. ["A", "B", "C"], labelled 0..K-1 in this order (label indices
      also work); None keeps the whole charset. Only these classes are rendered, and a sample does not
      depend on which others are selected.
    train_per_class: training objects per class.
    test_per_class: test objects per class, drawn independently of the training ones.
    image_size: side of the square objects in pixels.
    seed: the dataset seed; the same seed always gives the same objects.
    data_dir: where the cache lives; None is `$TFDS_DATA_DIR` or `~/tensorflow_datasets`.
    workers: rendering processes; None is one per available core (in-process for small sets). The
      objects do not depend on it.

  Returns:
    Objects of shape (image_size, image_size, 1), white glyphs on black; labels cycle through the
    classes, so any prefix of a split is class-balanced.
  """
  all_chars = glyphs.check_setting(charset, train_per_class, test_per_class, image_size, seed)
  chars = all_chars if classes is None else "".join(all_chars[i] for i in class_indices(classes, all_chars))
  path = cache_path(data_dir, charset, chars, train_per_class, test_per_class, image_size, seed)
  arrays = _read(path, quiet=True)  # a failed check is reported (and acted on) under the lock
  if arrays is None:
    with _locked(path):
      arrays = _read(path)  # rendered by the job that held the lock before us
      if arrays is None:
        arrays = _render(path, charset, chars, train_per_class, test_per_class, image_size, seed, workers)
  return ObjectSet(name=f"glyphs/{charset}", class_names=tuple(chars), **arrays)


def _locked(path: Path):
  """The entry's lock (waiting as long as it takes: rendering is minutes at most); no lock, and so no
  waiting, where the lock directory cannot be made (a read-only cache that fails its check fails
  when written, with its own error)."""
  lock = path.parent.with_name(path.parent.name + ".locks") / f"{path.name}.lock"
  try:
    lock.parent.mkdir(parents=True, exist_ok=True)
  except OSError:
    return contextlib.nullcontext(False)
  return locks.held(lock, timeout=-1)


def _render(
  path: Path,
  charset: str,
  chars: str,
  train_per_class: int,
  test_per_class: int,
  image_size: int,
  seed: int,
  workers: int | None,
) -> dict[str, np.ndarray]:
  """Renders the setting and writes its cache entry (under its lock)."""
  rendered = glyphs.render_splits(
    chars,
    {"train": train_per_class, "test": test_per_class},
    image_size,
    seed,
    workers,
    desc=f"rendering glyphs {path.name}",
  )
  arrays = {}
  for split, (images, labels, _) in rendered.items():
    arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[..., None], labels
  settings = {
    "charset": charset,
    "classes": chars,
    "train_per_class": train_per_class,
    "test_per_class": test_per_class,
    "image_size": image_size,
    "seed": seed,
  }
  _write(path, arrays, settings)
  return arrays
