"""The generated glyphs as a tensorflow-datasets dataset, `shiftbench_glyphs`, and `load_glyphs`.

Glyphs are rendered once per setting and cached under the TFDS data dir as array_record, then read back
with random access (no TensorFlow needed). The builder config name encodes every setting, e.g.
`digits-32px-500x100-s0`, so a different setting never reuses a stale cache. Bump `VERSION` whenever
the rendering in `glyphs.py` changes, for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import dataclasses
import io

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from shiftbench.data import glyphs
from shiftbench.data.objects import ObjectSet, select_object_classes
from shiftbench.data.tfds_source import quiet_tfds, read_split, resolve_data_dir

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
  glyphs.charset_chars(charset)
  if train_per_class < 1 or test_per_class < 1:
    raise ValueError(f"train_per_class and test_per_class must be >= 1, got {train_per_class}, "
                     f"{test_per_class}")
  if image_size < 8:
    raise ValueError(f"image_size must be >= 8 pixels, got {image_size}")
  if seed < 0:
    raise ValueError(f"seed must be >= 0, got {seed}")
  name = f"{charset}-{image_size}px-{train_per_class}x{test_per_class}-s{seed}"
  return GlyphsConfig(name=name, description=f"{charset} glyphs, {image_size}x{image_size}, "
                      f"{train_per_class} train / {test_per_class} test per class, seed {seed}",
                      charset=charset, train_per_class=train_per_class,
                      test_per_class=test_per_class, image_size=image_size, seed=seed)


class ShiftbenchGlyphs(tfds.core.GeneratorBasedBuilder):
  """Digits and letters rendered from matplotlib's fonts with random style, pose and noise."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [glyphs_config(charset) for charset in glyphs.CHARSETS]
  # TFDS's own lookup of this file imports `importlib_resources`, which tfds 4.9.10 uses undeclared.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    size = config.image_size
    features = tfds.features.FeaturesDict({
        # Raw bytes: no PNG codec (that would need TensorFlow) and no upcast to int64.
        "image": tfds.features.Tensor(shape=(size, size, 1), dtype=np.uint8,
                                      encoding=tfds.features.Encoding.BYTES),
        "label": tfds.features.Scalar(np.int64, doc=f"index into {glyphs.CHARSETS[config.charset]!r}"),
        "font": tfds.features.Scalar(np.int64, doc="index into shiftbench.data.glyphs.font_paths()"),
    })
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=features,
                                 supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator[Example]]:
    del dl_manager  # nothing to download
    config = self.builder_config
    chars = len(glyphs.CHARSETS[config.charset])
    counts = {"train": config.train_per_class, "test": config.test_per_class}
    # One bar for both splits, in place of TFDS's per-split bars (silenced by `quiet_tfds`).
    bar = tqdm(total=chars * sum(counts.values()), desc=f"rendering glyphs {config.name}",
               unit="img")
    return {split: self._generate_examples(split, n, bar) for split, n in counts.items()}

  def _generate_examples(self, split: str, per_class: int, bar: tqdm) -> Iterator[Example]:
    config = self.builder_config
    samples = glyphs.render_split(config.charset, per_class, config.image_size, config.seed, split)
    for i, (image, label, font) in enumerate(samples):
      bar.update()
      if bar.n >= bar.total:
        bar.close()
      yield i, {"image": image[..., None], "label": label, "font": font}


def load_glyphs(
    charset: str = "digits",
    classes: list[str] | None = None,
    train_per_class: int = 500,
    test_per_class: int = 100,
    image_size: int = 32,
    seed: int = 0,
    data_dir: str | None = None,
) -> ObjectSet:
  """Loads generated glyphs, rendering and caching them under `data_dir` the first time.

  Args:
    charset: "digits" (0-9), "letters" (A-Z) or "lowercase" (a-z).
    classes: characters to keep, e.g. ["A", "B", "C"], relabelled 0..K-1 in this order (label indices
      also work); None keeps the whole charset.
    train_per_class: training objects per class.
    test_per_class: test objects per class, drawn independently of the training ones.
    image_size: side of the square objects in pixels.
    seed: the dataset seed; the same seed always gives the same objects.
    data_dir: TFDS data dir for the cache; None is TFDS's default (`~/tensorflow_datasets` or
      `$TFDS_DATA_DIR`).

  Returns:
    Objects of shape (image_size, image_size, 1), white glyphs on black.
  """
  config = glyphs_config(charset, train_per_class, test_per_class, image_size, seed)
  # TFDS refuses a config object that shares its name with a predefined one: pass the name instead.
  predefined = {c.name for c in ShiftbenchGlyphs.BUILDER_CONFIGS}
  with quiet_tfds():
    builder = ShiftbenchGlyphs(config=config.name if config.name in predefined else config,
                               data_dir=resolve_data_dir(data_dir))
    if not builder.is_prepared():
      # TFDS prints "Downloading and preparing..." to stdout; the tqdm bar (stderr) says it better.
      try:
        with contextlib.redirect_stdout(io.StringIO()):
          builder.download_and_prepare(
              file_format="array_record",
              download_config=tfds.download.DownloadConfig(try_download_gcs=False))
      except OSError:
        if not builder.is_prepared():  # else a parallel job renamed the same dataset into place first
          raise
  splits = {split: read_split(builder, split, ("image", "label")) for split in glyphs.SPLITS}
  objs = ObjectSet(
      name=f"glyphs/{charset}",
      train_images=splits["train"]["image"], train_labels=splits["train"]["label"].astype(np.int32),
      test_images=splits["test"]["image"], test_labels=splits["test"]["label"].astype(np.int32),
      class_names=tuple(glyphs.CHARSETS[charset]))
  return select_object_classes(objs, classes)
