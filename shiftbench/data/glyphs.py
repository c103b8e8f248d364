"""Renders digits and letters as small, varied, handwriting-like objects, fully offline.

Glyphs come from the TrueType fonts that ship inside matplotlib (DejaVu, STIX, Computer Modern), so the
package always has a dataset without any download. Each sample draws a font, a stroke weight, a scale,
a rotation, a shear, an aspect ratio, a small offset of the glyph centre and a little sensor noise, so a
class is a distribution of shapes rather than one template. Glyphs are rendered at a few times the
target size and downsampled, which antialiases them and keeps generation fast.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import contextlib
import functools
import logging
import math
import multiprocessing
import os
import string
import sys
from collections.abc import Iterator

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from tqdm import tqdm

log = logging.getLogger(__name__)

CHARSETS: dict[str, str] = {
  "digits": string.digits,
  "letters": string.ascii_uppercase,
  "lowercase": string.ascii_lowercase,
}
SPLITS: tuple[str, ...] = ("train", "test")

# Fonts without text glyphs at the ASCII code points: a placeholder font, symbol and big-operator fonts,
# and cmmi10, whose old-style digits look like letters (cmti10 covers Computer Modern italic instead).
_SKIPPED_FONTS = ("LastResort", "STIXNonUni", "STIXSiz", "cmex10", "cmsy10", "cmmi10")
_MISSING_CHAR = "\U000f0000"  # private-use code point: renders each font's missing-glyph box, if any

_OVERSAMPLE = 3  # render at 3x the target size, then downsample (antialiasing)
_SCALE = (0.6, 0.95)  # the glyph's larger side, as a fraction of the image side
_MAX_ROTATION = 12.0  # degrees
_MAX_SHEAR = 0.2  # horizontal shear, x += shear * y
_MAX_LOG_ASPECT = 0.15  # width is scaled by exp(U(-a, a))
_MAX_OFFSET = 0.08  # shift of the glyph centre, as a fraction of the image side
_STROKES = (-1, 0, 0, 1, 2)  # -1 thins (MinFilter); k > 0 thickens by k/48 of the font size per side
_MIN_THIN_INK = 0.65  # thin a glyph only if it keeps this fraction of its ink
_NOISE_STD = (0.0, 5.0)  # Gaussian pixel noise, uint8 units


@functools.cache
def font_paths() -> tuple[str, ...]:
  """Text fonts shipped with matplotlib, sorted so that font indices are stable."""
  font_dir = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
  names = sorted(f for f in os.listdir(font_dir) if f.lower().endswith(".ttf"))
  return tuple(os.path.join(font_dir, f) for f in names if not f.startswith(_SKIPPED_FONTS))


@functools.cache
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
  return ImageFont.truetype(path, size)


def _draw(char: str, path: str, size: int, stroke: int = 0) -> Image.Image:
  """Draws `char` white on black, centred on a canvas with room for the glyph and its stroke."""
  side = 2 * size + 4 * stroke
  image = Image.new("L", (side, side), 0)
  ImageDraw.Draw(image).text(
    (side / 2, side / 2), char, fill=255, font=_font(path, size), anchor="mm", stroke_width=stroke, stroke_fill=255
  )
  return image


@functools.cache
def _has_glyph(path: str, char: str) -> bool:
  """Whether the font draws `char` as something other than nothing or its missing-glyph box."""
  drawn = np.asarray(_draw(char, path, 48))
  missing = np.asarray(_draw(_MISSING_CHAR, path, 48))
  return bool(drawn.max() > 128) and not np.array_equal(drawn, missing)


@functools.cache
def fonts_for(char: str) -> tuple[int, ...]:
  """Indices into `font_paths()` of the fonts that have a glyph for `char`."""
  fonts = tuple(i for i, p in enumerate(font_paths()) if _has_glyph(p, char))
  if not fonts:
    raise ValueError(f"no matplotlib font has a glyph for {char!r}")
  return fonts


@functools.cache
def _master(font: int, char: str, stroke: int, size: int) -> Image.Image:
  """The glyph at font size `size` with a stroke variant, cropped to its ink plus a 2 px margin."""
  image = _draw(char, font_paths()[font], size, max(stroke, 0) * size // 48)
  if stroke < 0:
    thin = image.filter(ImageFilter.MinFilter(3))
    # Thinning erases the hairlines of light serif fonts (cmr10, STIX): keep it where strokes survive.
    if np.asarray(thin, np.float32).sum() >= _MIN_THIN_INK * np.asarray(image, np.float32).sum():
      image = thin
  left, top, right, bottom = image.getbbox()
  return image.crop((left - 2, top - 2, right + 2, bottom + 2))


def render_glyph(char: str, rng: np.random.Generator, image_size: int) -> tuple[np.ndarray, int]:
  """Renders one random variant of `char`.

  Args:
    char: the character to draw.
    rng: the source of all randomness of this sample.
    image_size: the side of the square output image.

  Returns:
    (image, font): a (image_size, image_size) uint8 image with a white glyph on black, and the index
    into `font_paths()` of the font used.
  """
  fonts = fonts_for(char)
  font = fonts[rng.integers(len(fonts))]
  stroke = _STROKES[rng.integers(len(_STROKES))]
  side = image_size * _OVERSAMPLE
  master = _master(font, char, stroke, side)

  # Forward map from master to output pixels: rotation * shear * aspect, then a scalar scale chosen so
  # that the glyph's larger side covers the drawn fraction of the image. Plain floats, not numpy: at
  # 2x2, numpy's per-call overhead was half of a sample's rendering time.
  angle = math.radians(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION))
  cos, sin = math.cos(angle), math.sin(angle)
  shear = rng.uniform(-_MAX_SHEAR, _MAX_SHEAR)
  aspect = math.exp(rng.uniform(-_MAX_LOG_ASPECT, _MAX_LOG_ASPECT))
  # [[a, b], [c, d]] = [[cos, -sin], [sin, cos]] @ [[1, shear], [0, 1]] @ [[aspect, 0], [0, 1]]
  a, b = cos * aspect, cos * shear - sin
  c, d = sin * aspect, sin * shear + cos
  w, h = master.size
  # The extent of the transformed master's corners (centred at the origin) along each output axis.
  extent_x = abs(a) * w + abs(b) * h
  extent_y = abs(c) * w + abs(d) * h
  scale = rng.uniform(*_SCALE) * side / max(extent_x, extent_y)
  a, b, c, d = scale * a, scale * b, scale * c, scale * d

  # Offset the centre, but never so far that the glyph leaves the image.
  offset = rng.uniform(-1, 1, 2) * _MAX_OFFSET * side
  centre = [
    side / 2 + min(max(float(o), -s), s)
    for o, s in zip(offset, (max((side - scale * e) / 2 - _OVERSAMPLE, 0.0) for e in (extent_x, extent_y)))
  ]

  # PIL's affine transform maps output pixels back to input pixels: the inverse of [[a, b], [c, d]].
  det = a * d - b * c
  ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
  coeffs = (ia, ib, w / 2 - (ia * centre[0] + ib * centre[1]), ic, id_, h / 2 - (ic * centre[0] + id_ * centre[1]))
  big = master.transform((side, side), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
  small = big.resize((image_size, image_size), Image.Resampling.BOX)

  image = np.asarray(small, np.float32)
  image += rng.normal(0.0, rng.uniform(*_NOISE_STD), image.shape)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8), int(font)


def sample_rng(seed: int, split: str, char: str, index: int) -> np.random.Generator:
  """The random stream of one sample, keyed by what it is (seed, split, character, index) and by nothing
  else: the same sample is the same bytes whichever classes are selected, in whatever order, and
  whichever worker renders it. Train and test have their own streams, so test objects are never train
  objects."""
  return np.random.default_rng([seed, SPLITS.index(split), ord(char), index])


def render_samples(
  char: str, start: int, stop: int, image_size: int, seed: int, split: str
) -> tuple[np.ndarray, np.ndarray]:
  """Samples `start..stop-1` of one character: ((n, image_size, image_size) uint8, (n,) font indices)."""
  images = np.empty((stop - start, image_size, image_size), np.uint8)
  fonts = np.empty(stop - start, np.int64)
  for j, i in enumerate(range(start, stop)):
    images[j], fonts[j] = render_glyph(char, sample_rng(seed, split, char, i), image_size)
  return images, fonts


def charset_chars(charset: str) -> str:
  """The characters of a charset; raises ValueError naming the known charsets."""
  if charset not in CHARSETS:
    raise ValueError(f"unknown glyph charset {charset!r}; choose one of {sorted(CHARSETS)}")
  return CHARSETS[charset]


def check_setting(charset: str, train_per_class: int, test_per_class: int, image_size: int, seed: int) -> str:
  """Validates a glyph dataset setting (the cache's and the TFDS builder's); returns the charset's
  characters."""
  chars = charset_chars(charset)
  if train_per_class < 1 or test_per_class < 1:
    raise ValueError(f"train_per_class and test_per_class must be >= 1, got {train_per_class}, {test_per_class}")
  if image_size < 8:
    raise ValueError(f"image_size must be >= 8 pixels, got {image_size}")
  if seed < 0:
    raise ValueError(f"seed must be >= 0, got {seed}")
  return chars


# Samples per task handed to a worker: large enough that pickling and dispatch are noise next to
# rendering a sample, small enough that the last tasks balance across workers.
_TASK = 250
# Below this many samples a pool's start-up (a fresh interpreter per worker) costs more than it saves.
_MIN_PARALLEL = 2000


def available_cores() -> int:
  """Cores this process may run on (the affinity mask, which SLURM and containers narrow)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def _run(tasks: list[tuple], image_size: int, seed: int, workers: int) -> Iterator[tuple[np.ndarray, ...]]:
  """`render_samples` of every task, in order, in this process or in a pool of `workers`."""
  if workers == 1:
    yield from (render_samples(c, a, b, image_size, seed, s) for c, a, b, s in tasks)
    return
  # spawn, not fork: the parent usually has JAX's threads running, and forking those can deadlock.
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
    chars, starts, stops, splits = zip(*tasks)
    n = len(tasks)
    with _main_not_rerun():  # workers start here, when map submits every task
      results = pool.map(render_samples, chars, starts, stops, [image_size] * n, [seed] * n, splits)
    yield from results


@contextlib.contextmanager
def _main_not_rerun() -> Iterator[None]:
  """Hides the main module's origin while spawned workers start. A spawned worker otherwise re-runs
  the parent's main script, and a script without an `if __name__ == "__main__":` guard would start its
  whole run again in every worker; the workers need nothing from it (`render_samples` lives here)."""
  main = sys.modules.get("__main__")
  if main is None:
    yield
    return
  saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
  main.__dict__.pop("__file__", None)
  main.__spec__ = None
  try:
    yield
  finally:
    main.__dict__.pop("__spec__", None)
    main.__dict__.update(saved)


def render_split(
  chars: str,
  per_class: int,
  image_size: int,
  seed: int,
  split: str,
  workers: int | None = None,
  desc: str | None = None,
) -> tuple[np.ndarray, ...]:
  """`render_splits` for one split: (images, labels, fonts)."""
  return render_splits(chars, {split: per_class}, image_size, seed, workers, desc)[split]


def render_splits(
  chars: str, per_class: dict[str, int], image_size: int, seed: int, workers: int | None = None, desc: str | None = None
) -> dict[str, tuple[np.ndarray, ...]]:
  """Renders samples of every character in `chars` for each split, in parallel over processes.

  Sample `i` of class `k` sits at index `i * len(chars) + k`: labels cycle (0, 1, ..., K-1, 0, ...), so
  any prefix is class-balanced. Every sample has its own random stream (`sample_rng`), so the output is
  the same bytes for any number of workers.

  Args:
    chars: the characters to render; label `k` is `chars[k]`.
    per_class: samples per class of each split, e.g. {"train": 500, "test": 100}.
    image_size: the side of the square images.
    seed: the dataset seed.
    workers: processes to render in; None: one per available core (in-process for small sets).
    desc: a progress bar's label; None shows none.

  Returns:
    split -> (images (N, image_size, image_size) uint8, labels (N,) int32, fonts (N,) int64), N = K * n.
  """
  k = len(chars)
  tasks = [
    (c, a, min(a + _TASK, n), split) for split, n in per_class.items() for c in chars for a in range(0, n, _TASK)
  ]
  total = k * sum(per_class.values())
  if workers is None:
    workers = available_cores() if total >= _MIN_PARALLEL else 1
  workers = max(1, min(workers, len(tasks)))
  images = {s: np.empty((n, k, image_size, image_size), np.uint8) for s, n in per_class.items()}
  fonts = {s: np.empty((n, k), np.int64) for s, n in per_class.items()}
  bar = tqdm(total=total, desc=desc, unit="img", disable=True if desc is None else None)  # None: terminals only
  try:
    for (c, a, b, s), (imgs, fnts) in zip(tasks, _run(tasks, image_size, seed, workers)):
      images[s][a:b, chars.index(c)], fonts[s][a:b, chars.index(c)] = imgs, fnts
      bar.update(b - a)
  except (concurrent.futures.process.BrokenProcessPool, OSError):
    # Workers that cannot start (no room for a process, a sandbox): the same bytes in one process.
    log.warning("glyph rendering workers failed to start; rendering in one process")
    return render_splits(chars, per_class, image_size, seed, 1, desc)
  finally:
    bar.close()
  return {
    s: (images[s].reshape(-1, image_size, image_size), np.tile(np.arange(k, dtype=np.int32), n), fonts[s].reshape(-1))
    for s, n in per_class.items()
  }
