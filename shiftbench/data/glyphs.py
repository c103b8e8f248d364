"""Renders digits and letters as small, varied, handwriting-like objects, fully offline.

Glyphs come from the TrueType fonts that ship inside matplotlib (DejaVu, STIX, Computer Modern), so the
package always has a dataset without any download. Each sample draws a font, a stroke weight, a scale,
a rotation, a shear, an aspect ratio, a small offset of the glyph centre and a little sensor noise, so a
class is a distribution of shapes rather than one template. Glyphs are rendered at a few times the
target size and downsampled, which antialiases them and keeps generation fast.
"""

from __future__ import annotations

from collections.abc import Iterator
import functools
import os
import string

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

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
  ImageDraw.Draw(image).text((side / 2, side / 2), char, fill=255, font=_font(path, size),
                             anchor="mm", stroke_width=stroke, stroke_fill=255)
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
  # that the glyph's larger side covers the drawn fraction of the image.
  angle = np.deg2rad(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION))
  rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  shear = np.array([[1.0, rng.uniform(-_MAX_SHEAR, _MAX_SHEAR)], [0.0, 1.0]])
  aspect = np.diag([np.exp(rng.uniform(-_MAX_LOG_ASPECT, _MAX_LOG_ASPECT)), 1.0])
  linear = rotation @ shear @ aspect
  w, h = master.size
  corners = linear @ (np.array([[0, w, 0, w], [0, 0, h, h]]) - np.array([[w / 2], [h / 2]]))
  extent = corners.max(axis=1) - corners.min(axis=1)
  scale = rng.uniform(*_SCALE) * side / extent.max()
  linear = scale * linear

  # Offset the centre, but never so far that the glyph leaves the image.
  slack = np.maximum((side - scale * extent) / 2 - _OVERSAMPLE, 0.0)
  centre = side / 2 + np.clip(rng.uniform(-1, 1, 2) * _MAX_OFFSET * side, -slack, slack)

  # PIL's affine transform maps output pixels back to input pixels.
  inverse = np.linalg.inv(linear)
  shift = np.array([w / 2, h / 2]) - inverse @ centre
  coeffs = (inverse[0, 0], inverse[0, 1], shift[0], inverse[1, 0], inverse[1, 1], shift[1])
  big = master.transform((side, side), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
  small = big.resize((image_size, image_size), Image.Resampling.BOX)

  image = np.asarray(small, np.float32)
  image += rng.normal(0.0, rng.uniform(*_NOISE_STD), image.shape)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8), int(font)


def split_seed(seed: int, split: str) -> np.random.SeedSequence:
  """An independent random stream per (seed, split), so test objects are never train objects."""
  return np.random.SeedSequence([seed, SPLITS.index(split)])


def render_split(
    charset: str, per_class: int, image_size: int, seed: int, split: str
) -> Iterator[tuple[np.ndarray, int, int]]:
  """Yields (image, label, font) for `per_class` samples of every character of a charset.

  Labels cycle through the classes (0, 1, ..., K-1, 0, ...), so any prefix is class-balanced.

  Args:
    charset: a key of `CHARSETS`.
    per_class: samples per class.
    image_size: the side of the square images.
    seed: the dataset seed.
    split: "train" or "test"; each has its own random stream.

  Yields:
    (image, label, font): a (image_size, image_size) uint8 image, its class, its font index.
  """
  chars = charset_chars(charset)
  rng = np.random.default_rng(split_seed(seed, split))
  for i in range(per_class * len(chars)):
    label = i % len(chars)
    image, font = render_glyph(chars[label], rng, image_size)
    yield image, label, font


def charset_chars(charset: str) -> str:
  """The characters of a charset; raises ValueError naming the known charsets."""
  if charset not in CHARSETS:
    raise ValueError(f"unknown glyph charset {charset!r}; choose one of {sorted(CHARSETS)}")
  return CHARSETS[charset]
