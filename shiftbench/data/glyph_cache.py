"""`load_glyphs`: the generated glyph dataset, rendered once per setting and cached as plain arrays.

The cache is a directory per setting under the cache root's `glyphs/` (`$SHIFTBENCH_CACHE/glyphs/`, default
`~/.cache/shiftbench/glyphs/`), or under `<data_dir>/shiftbench_glyph_cache/` where the user names a
`data_dir`; each is named after everything that determines its bytes: charset, the selected classes, image
size, samples per class, seed, and a fingerprint of the renderer (its version, matplotlib's font files, Pillow
and FreeType, numpy). Its `meta.json` carries a SHA-256 of the arrays, written when they are saved and checked
on every load, so a truncated, edited or otherwise stale file is never served: it is rendered again, with one
warning. Only the selected classes are rendered, in parallel over the available cores (`glyphs.render_split`).
No TensorFlow or tensorflow-datasets is needed; `glyphs_builder.ShiftbenchGlyphs` wraps the same renderer as a
TFDS dataset for those who want one.

Jobs that start together on one cache (a sweep's first wave) render each setting once (`cache.obtain`): the
first takes the setting's lock (in `glyphs.locks/` beside the cache) and renders, the others wait and
read its copy. An entry is published by renaming a complete temporary directory into place, and one that failed
its check is moved aside only under the lock, so no reader ever sees half an entry or loses one it reads.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

import numpy as np
import PIL
from PIL import features

from shiftbench.data import glyphs
from shiftbench.data.objects import ObjectSet, class_indices
from shiftbench.infra import cache, hashing

log = logging.getLogger(__name__)
_KIND = cache.Kind(
  noun="glyph cache entry",
  making="rendering",
  log=log,
  hint="set $SHIFTBENCH_CACHE (or data.data_dir) to a writable directory",
)

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
  return hashing.json_hash(parts, 10)


def default_root() -> Path:
  """Where the glyph cache lives when no `data_dir` is given: `glyphs/` under the cache root
  (`$SHIFTBENCH_CACHE`, default `~/.cache/shiftbench`)."""
  return cache.root() / "glyphs"


def content_hash(arrays: dict[str, np.ndarray]) -> str:
  """sha256 over every array's dtype, shape and bytes, in a fixed order, and their names."""
  return hashing.sha256_arrays(*(arrays[name] for name in _ARRAYS), names=_ARRAYS)


def cache_path(
  data_dir: str | os.PathLike[str] | None,
  charset: str,
  chars: str,
  train_per_class: int,
  test_per_class: int,
  image_size: int,
  seed: int,
) -> Path:
  """The cache directory of one setting (absolute: Hydra may change the working directory): under
  `<data_dir>/shiftbench_glyph_cache/` where the user names a `data_dir`, else under `default_root()`."""
  name = f"{charset}-{chars}-{image_size}px-{train_per_class}x{test_per_class}-s{seed}-r{fingerprint()}"
  if data_dir is None or os.fspath(data_dir) == "":
    return default_root() / name
  return Path(os.path.expanduser(os.fspath(data_dir))).absolute() / CACHE_SUBDIR / name


def _read(path: Path) -> dict[str, np.ndarray]:
  """The cached arrays, or a `cache.Corrupt` saying why the entry fails its check."""
  try:
    meta = json.loads((path / "meta.json").read_text())
    with np.load(path / "arrays.npz") as f:
      arrays = {k: f[k] for k in _ARRAYS}
    if content_hash(arrays) == meta["sha256"]:
      return arrays
    why = "its content hash does not match meta.json"
  except (OSError, ValueError, KeyError, TypeError) as e:  # unreadable, truncated or malformed
    why = f"it cannot be read ({type(e).__name__}: {e})"
  raise cache.Corrupt(f"glyph cache {path} failed its check ({why})")


def _write(path: Path, arrays: dict[str, np.ndarray], settings: dict) -> None:
  """Writes the entry at `path` (a private temporary place: `cache.obtain` publishes it)."""
  path.mkdir()
  np.savez(path / "arrays.npz", **arrays)
  meta = {"sha256": content_hash(arrays), "settings": settings, "fingerprint": fingerprint()}
  (path / "meta.json").write_text(json.dumps(meta, indent=1))


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
    data_dir: a directory to keep the cache in (`<data_dir>/shiftbench_glyph_cache/`); None keeps it under
      the cache root, `$SHIFTBENCH_CACHE/glyphs/` (default `~/.cache/shiftbench/glyphs/`).
    workers: rendering processes; None is one per available core (in-process for small sets). The
      objects do not depend on it.

  Returns:
    Objects of shape (image_size, image_size, 1), white glyphs on black; labels cycle through the
    classes, so any prefix of a split is class-balanced.
  """
  all_chars = glyphs.check_setting(charset, train_per_class, test_per_class, image_size, seed)
  chars = all_chars if classes is None else "".join(all_chars[i] for i in class_indices(classes, all_chars))
  path = cache_path(data_dir, charset, chars, train_per_class, test_per_class, image_size, seed)

  def render(target: Path, locked: bool) -> dict[str, np.ndarray]:
    return _render(target, charset, chars, train_per_class, test_per_class, image_size, seed, workers)

  arrays = cache.obtain(path, render, _read, kind=_KIND, label=f"glyphs {path.name}").value
  return ObjectSet(name=f"glyphs/{charset}", class_names=tuple(chars), **arrays)


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
  """Renders the setting and writes its cache entry at `path` (a temporary place with the entry's name)."""
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
