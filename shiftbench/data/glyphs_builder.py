"""The generated glyphs as a tensorflow-datasets dataset, `shiftbench_glyphs`.

For users who want the glyphs through TFDS (`tfds.builder("shiftbench_glyphs/digits-32px-500x100-s0")`).
shiftbench itself loads them with `glyph_cache.load_glyphs`, which needs no TFDS; both render the same
samples (`glyphs.render_splits`). The builder config name encodes every setting, e.g.
`digits-32px-500x100-s0`, so a different setting never reuses a stale dataset. Bump `VERSION` whenever
the rendering in `glyphs.py` changes, for the same reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from shiftbench.data import glyphs

Example = tuple[int, dict[str, np.ndarray | int]]  # (key, features) as TFDS expects from a generator


@dataclasses.dataclass(eq=False)
class GlyphsConfig(tfds.core.BuilderConfig):
  """One glyph dataset setting; build it with `glyphs_config` so that the name matches the fields."""

  charset: str = "digits"
  train_per_class: int = 500
  test_per_class: int = 100
  image_size: int = 32
  seed: int = 0


def glyphs_config(
  charset: str = "digits",
  train_per_class: int = 500,
  test_per_class: int = 100,
  image_size: int = 32,
  seed: int = 0,
) -> GlyphsConfig:
  """Validates a glyph setting and names it after all of its fields."""
  glyphs.check_setting(charset, train_per_class, test_per_class, image_size, seed)
  name = f"{charset}-{image_size}px-{train_per_class}x{test_per_class}-s{seed}"
  return GlyphsConfig(
    name=name,
    description=f"{charset} glyphs, {image_size}x{image_size}, "
    f"{train_per_class} train / {test_per_class} test per class, seed {seed}",
    charset=charset,
    train_per_class=train_per_class,
    test_per_class=test_per_class,
    image_size=image_size,
    seed=seed,
  )


class ShiftbenchGlyphs(tfds.core.GeneratorBasedBuilder):
  """Digits and letters rendered from matplotlib's fonts with random style, pose and noise."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {"1.0.0": "First release.", "2.0.0": "One random stream per sample; rendered in parallel."}
  BUILDER_CONFIGS = [glyphs_config(charset) for charset in glyphs.CHARSETS]
  # TFDS's own lookup of this file imports `importlib_resources`, which tfds 4.9.10 uses undeclared.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    size = config.image_size
    features = tfds.features.FeaturesDict(
      {
        # Raw bytes: no PNG codec (that would need TensorFlow) and no upcast to int64.
        "image": tfds.features.Tensor(shape=(size, size, 1), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES),
        "label": tfds.features.Scalar(np.int64, doc=f"index into {glyphs.CHARSETS[config.charset]!r}"),
        "font": tfds.features.Scalar(np.int64, doc="index into shiftbench.data.glyphs.font_paths()"),
      }
    )
    return tfds.core.DatasetInfo(
      builder=self, description=self.__doc__, features=features, supervised_keys=("image", "label")
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator[Example]]:
    del dl_manager  # nothing to download
    config = self.builder_config
    rendered = glyphs.render_splits(
      glyphs.CHARSETS[config.charset],
      {"train": config.train_per_class, "test": config.test_per_class},
      config.image_size,
      config.seed,
      desc=f"rendering glyphs {config.name}",
    )
    return {split: self._generate_examples(*arrays) for split, arrays in rendered.items()}

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray, fonts: np.ndarray) -> Iterator[Example]:
    for i, (image, label, font) in enumerate(zip(images, labels, fonts)):
      yield i, {"image": image[..., None], "label": int(label), "font": int(font)}
