"""Tests of the data layer: generated glyphs, the TFDS builder and loader, `.npz` files, classes."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath

from shiftbench import data
from shiftbench.data import glyph_cache, glyphs, glyphs_builder, tfds_source
from shiftbench.data.objects import ObjectSet

SIZE = 32


def render(
  charset: str = "digits", per_class: int = 5, seed: int = 0, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
  images, labels, _ = glyphs.render_split(glyphs.CHARSETS[charset], per_class, SIZE, seed, split, workers=1)
  return images, labels


def tiny_glyphs(data_dir: pathlib.Path, **kwargs) -> ObjectSet:
  settings = dict(charset="digits", train_per_class=5, test_per_class=3, image_size=SIZE, data_dir=str(data_dir))
  return data.load_glyphs(**{**settings, **kwargs})


# --- glyph rendering ---------------------------------------------------------------------------------


def test_rendering_is_deterministic_per_seed():
  images, labels = render(seed=3)
  again, again_labels = render(seed=3)
  other, _ = render(seed=4)
  np.testing.assert_array_equal(images, again)
  np.testing.assert_array_equal(labels, again_labels)
  assert np.abs(images.astype(int) - other.astype(int)).mean() > 5


def test_train_and_test_objects_differ():
  train, _ = render(split="train")
  test, _ = render(split="test")
  flat_train = {x.tobytes() for x in train}
  assert not any(x.tobytes() in flat_train for x in test)


def test_samples_of_one_class_vary():
  images, labels = render(per_class=6)
  for k in range(10):
    same = images[labels == k].astype(np.float32)
    diffs = [np.abs(same[i] - same[j]).mean() for i in range(len(same)) for j in range(i)]
    assert min(diffs) > 3, f"class {k} has near-identical samples"


@pytest.mark.parametrize("charset", sorted(glyphs.CHARSETS))
def test_glyphs_are_inked_centred_and_inside_the_image(charset):
  images, labels = render(charset, per_class=2)
  chars = glyphs.CHARSETS[charset]
  np.testing.assert_array_equal(np.bincount(labels), np.full(len(chars), 2))
  assert images.shape == (2 * len(chars), SIZE, SIZE) and images.dtype == np.uint8
  for image in images:
    assert image.max() > 200, "empty glyph"
    ring = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    assert ring.max() < 64, "glyph touches the border"
    rows, cols = np.nonzero(image > 128)
    extent = max(np.ptp(rows), np.ptp(cols)) + 1
    assert 0.4 * SIZE <= extent <= SIZE, f"glyph extent {extent} px"


def test_missing_glyphs_and_symbol_fonts_are_skipped():
  font_dir = pathlib.Path(glyphs.font_paths()[0]).parent
  assert glyphs._has_glyph(str(font_dir / "DejaVuSans.ttf"), "A")
  assert not glyphs._has_glyph(str(font_dir / "DejaVuSansDisplay.ttf"), "A")  # no letters at all
  assert not glyphs._has_glyph(str(font_dir / "DejaVuSans.ttf"), "\u4e2d")  # the missing-glyph box
  names = {pathlib.Path(p).name for p in glyphs.font_paths()}
  assert "cmr10.ttf" in names
  assert not names & {"cmsy10.ttf", "cmex10.ttf", "LastResortHE-Regular.ttf", "STIXSizOneSymReg.ttf"}
  assert len(glyphs.fonts_for("7")) >= 15


def test_unknown_charset_is_rejected():
  with pytest.raises(ValueError, match="greek.*digits"):
    data.load_glyphs("greek")


# --- the glyph cache and the TFDS builder -----------------------------------------------------------


def test_the_same_seed_gives_the_same_bytes_for_any_number_of_workers():
  one = glyphs.render_splits("07A", {"train": 6, "test": 2}, 16, 5, workers=1)
  two = glyphs.render_splits("07A", {"train": 6, "test": 2}, 16, 5, workers=2)  # a real 2-process pool
  for split in one:
    for a, b in zip(one[split], two[split]):
      np.testing.assert_array_equal(a, b)
  # A sample depends on its class and index, not on which other classes are rendered beside it.
  alone = glyphs.render_split("A", 6, 16, 5, "train", workers=1)[0]
  np.testing.assert_array_equal(one["train"][0][2::3], alone)


def test_cache_reloads_without_rendering_and_keys_every_setting(tmp_path, monkeypatch):
  objs = tiny_glyphs(tmp_path)
  assert len(list((tmp_path / glyph_cache.CACHE_SUBDIR).glob("digits-0123456789-32px-5x3-s0-r*/meta.json"))) == 1
  assert objs.train_images.shape == (50, SIZE, SIZE, 1) and objs.test_images.shape == (30, SIZE, SIZE, 1)
  assert objs.class_names == tuple("0123456789") and objs.name == "glyphs/digits"
  np.testing.assert_array_equal(objs.train_labels[:10], np.arange(10))  # labels cycle: prefixes balanced
  np.testing.assert_array_equal(np.bincount(objs.train_labels), np.full(10, 5))

  def fail(*args, **kwargs):
    raise AssertionError("glyphs were rendered again")

  monkeypatch.setattr(glyphs, "render_splits", fail)
  again = tiny_glyphs(tmp_path)
  np.testing.assert_array_equal(objs.train_images, again.train_images)
  np.testing.assert_array_equal(objs.test_labels, again.test_labels)
  for change in (
    {"seed": 1},
    {"train_per_class": 4},
    {"test_per_class": 2},
    {"image_size": 30},
    {"classes": ["1", "0"]},
  ):  # a new setting is a new cache entry
    with pytest.raises(AssertionError, match="rendered again"):
      tiny_glyphs(tmp_path, **change)
  monkeypatch.setattr(glyph_cache, "RENDER_VERSION", glyph_cache.RENDER_VERSION + 1)
  glyph_cache.fingerprint.cache_clear()  # so does a new renderer (or new fonts, Pillow, FreeType, numpy)
  try:
    with pytest.raises(AssertionError, match="rendered again"):
      tiny_glyphs(tmp_path)
  finally:
    glyph_cache.fingerprint.cache_clear()


def test_a_cache_whose_bytes_changed_is_rendered_again(tmp_path, caplog):
  objs = tiny_glyphs(tmp_path, train_per_class=2, test_per_class=1)
  (entry,) = (tmp_path / glyph_cache.CACHE_SUBDIR).iterdir()
  with np.load(entry / "arrays.npz") as f:
    arrays = dict(f)
  arrays["train_images"][0, 0, 0] ^= 1  # one bit of one stored pixel
  np.savez(entry / "arrays.npz", **arrays)
  with caplog.at_level("WARNING"):
    again = tiny_glyphs(tmp_path, train_per_class=2, test_per_class=1)
  assert "content hash does not match" in caplog.text and str(entry) in caplog.text
  np.testing.assert_array_equal(again.train_images, objs.train_images)
  (entry / "arrays.npz").write_bytes(b"truncated")
  caplog.clear()
  with caplog.at_level("WARNING"):
    tiny_glyphs(tmp_path, train_per_class=2, test_per_class=1)
  assert "cannot be read" in caplog.text
  assert len(list((tmp_path / glyph_cache.CACHE_SUBDIR).iterdir())) == 1  # replaced, no leftovers


def test_tfds_builder_holds_the_same_objects_as_load_glyphs(tmp_path):
  builder = glyphs_builder.ShiftbenchGlyphs(
    config=glyphs_builder.glyphs_config("digits", 3, 2, 16, 2), data_dir=str(tmp_path / "tfds")
  )
  builder.download_and_prepare(
    file_format="array_record", download_config=tfds.download.DownloadConfig(try_download_gcs=False)
  )
  stored = tfds_source.read_split(builder, "train", ("image", "label"))
  objs = tiny_glyphs(tmp_path, train_per_class=3, test_per_class=2, image_size=16, seed=2)
  # TFDS reorders examples; as sets, the stored objects are exactly the rendered ones.
  assert sorted(x.tobytes() for x in stored["image"]) == sorted(x.tobytes() for x in objs.train_images)


def test_config_name_encodes_every_setting():
  config = glyphs_builder.glyphs_config("letters", 7, 4, 24, 9)
  assert config.name == "letters-24px-7x4-s9"
  with pytest.raises(ValueError, match="image_size"):
    glyphs_builder.glyphs_config(image_size=4)


def test_glyph_classes_are_selected_by_name_and_relabelled(tmp_path):
  objs = tiny_glyphs(tmp_path, charset="letters", classes=["C", "A"], train_per_class=2, test_per_class=1)
  full = tiny_glyphs(tmp_path, charset="letters", train_per_class=2, test_per_class=1)
  assert objs.class_names == ("C", "A") and objs.num_classes == 2
  assert objs.train_images.shape == (4, SIZE, SIZE, 1)
  c_images = full.train_images[full.train_labels == 2]
  np.testing.assert_array_equal(objs.train_images[objs.train_labels == 0], c_images)
  with pytest.raises(ValueError, match=r"'c'.*'A', 'B'"):
    tiny_glyphs(tmp_path, charset="letters", classes=["c"], train_per_class=2, test_per_class=1)


# --- class selection and resizing ---------------------------------------------------------------------


def test_select_classes_keeps_order_and_relabels():
  images = np.arange(6)[:, None]
  labels = np.array([0, 1, 2, 0, 1, 2])
  x, y, names = data.select_classes(images, labels, ["c", 0], ["a", "b", "c"])
  np.testing.assert_array_equal(x[:, 0], [0, 2, 3, 5])
  np.testing.assert_array_equal(y, [1, 0, 1, 0])
  assert names == ("c", "a") and y.dtype == np.int32
  with pytest.raises(ValueError, match=r"'d'.*\['a', 'b', 'c'\]"):
    data.select_classes(images, labels, ["d"], ["a", "b", "c"])
  with pytest.raises(ValueError, match="3"):
    data.select_classes(images, labels, [3], ["a", "b", "c"])
  with pytest.raises(ValueError, match="twice"):
    data.select_classes(images, labels, [1, "b"], ["a", "b", "c"])


def test_resize_objects():
  rng = np.random.default_rng(0)
  objs = ObjectSet(
    "t",
    np.full((2, 28, 28, 3), 100, np.uint8),
    np.zeros(2, np.int32),
    rng.integers(0, 256, (1, 28, 28, 3), dtype=np.uint8),
    np.zeros(1, np.int32),
    ("a",),
  )
  big = data.resize_objects(objs, 40)
  assert big.object_shape == (40, 40, 3) and big.train_images.dtype == np.uint8
  np.testing.assert_array_equal(big.train_images, 100)  # a constant image stays constant
  np.testing.assert_array_equal(big.train_labels, objs.train_labels)
  assert data.resize_objects(objs, 28) is objs
  grey = dataclasses.replace(objs, train_images=objs.train_images[..., :1], test_images=objs.test_images[..., :1])
  assert data.resize_objects(grey, 14).object_shape == (14, 14, 1)


def test_object_set_validates_its_arrays():
  images = np.zeros((2, 4, 4, 1), np.uint8)
  with pytest.raises(ValueError, match="uint8"):
    ObjectSet("t", images.astype(np.float32), np.zeros(2, np.int32), images, np.zeros(2, np.int32), ("a",))
  with pytest.raises(ValueError, match=r"\[0, 1\)"):
    ObjectSet("t", images, np.array([0, 1], np.int32), images, np.zeros(2, np.int32), ("a",))


# --- .npz files ----------------------------------------------------------------------------------------


def test_npz_round_trip_with_test_arrays(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (6, 5, 5), dtype=np.uint8)
  test_images = rng.random((3, 5, 5, 1))
  np.savez(
    tmp_path / "d.npz",
    images=images,
    labels=np.array([0, 1, 2, 0, 1, 2]),
    test_images=test_images,
    test_labels=np.array([2, 1, 0]),
    class_names=["x", "y", "z"],
  )
  objs = data.load_npz(str(tmp_path / "d.npz"), classes=["z", "x"])
  np.testing.assert_array_equal(objs.train_images[..., 0], images[[0, 2, 3, 5]])
  np.testing.assert_array_equal(objs.train_labels, [1, 0, 1, 0])
  np.testing.assert_array_equal(objs.test_images, np.rint(test_images[[0, 2]] * 255).astype(np.uint8))
  assert objs.class_names == ("z", "x") and objs.name == f"npz:{tmp_path / 'd.npz'}"


def test_npz_holds_out_a_seeded_stratified_test_split(tmp_path, monkeypatch):
  labels = np.repeat(np.arange(3), 10)
  images = np.arange(30, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
  np.savez(tmp_path / "d.npz", images=images, labels=labels)
  monkeypatch.chdir(tmp_path)  # a relative path is resolved now, not later
  objs = data.load_npz("d.npz", test_fraction=0.2, seed=1)
  assert objs.name == f"npz:{tmp_path / 'd.npz'}" and objs.class_names == ("0", "1", "2")
  np.testing.assert_array_equal(np.bincount(objs.test_labels), [2, 2, 2])
  ids = np.concatenate([objs.train_images[:, 0, 0, 0], objs.test_images[:, 0, 0, 0]])
  np.testing.assert_array_equal(np.sort(ids), np.arange(30))
  same = data.load_npz("d.npz", test_fraction=0.2, seed=1)
  other = data.load_npz("d.npz", test_fraction=0.2, seed=2)
  np.testing.assert_array_equal(same.test_images, objs.test_images)
  assert not np.array_equal(other.test_images, objs.test_images)


def test_npz_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.npz"):
    data.load_npz(str(tmp_path / "missing.npz"))
  np.savez(tmp_path / "nolabels.npz", images=np.zeros((2, 3, 3), np.uint8), targets=np.zeros(2))
  with pytest.raises(ValueError, match=r"'labels'.*\['images', 'targets'\]"):
    data.load_npz(str(tmp_path / "nolabels.npz"))
  np.savez(tmp_path / "short.npz", images=np.zeros((4, 3, 3), np.uint8), labels=np.zeros(3, int))
  with pytest.raises(ValueError, match=r"\(3,\).*\(4, 3, 3, 1\)"):
    data.load_npz(str(tmp_path / "short.npz"))
  np.savez(tmp_path / "range.npz", images=np.full((2, 3, 3), 2.0), labels=np.zeros(2, int))
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    data.load_npz(str(tmp_path / "range.npz"))


# --- real TFDS datasets ------------------------------------------------------------------------------


class ShiftbenchTinyTest(tfds.core.GeneratorBasedBuilder):
  """A tiny RGB dataset whose object i is filled with the value i and labelled i % 3."""

  VERSION = tfds.core.Version("1.0.0")
  code_path = epath.Path(__file__)  # see ShiftbenchGlyphs.code_path

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=(4, 4, 3), dtype=np.uint8),
          "label": tfds.features.ClassLabel(names=["ant", "bee", "cat"]),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(12), "test": self._generate_examples(6)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"image": np.full((4, 4, 3), i, np.uint8), "label": i % 3}


def test_load_tfds_reads_a_prepared_array_record_dataset(tmp_path):
  with tfds_source.quiet_tfds():
    ShiftbenchTinyTest(data_dir=str(tmp_path)).download_and_prepare(file_format="array_record")
  objs = data.load_tfds("shiftbench_tiny_test", data_dir=str(tmp_path), download=False)
  assert objs.object_shape == (4, 4, 3) and objs.class_names == ("ant", "bee", "cat")
  np.testing.assert_array_equal(objs.train_labels, objs.train_images[:, 0, 0, 0] % 3)
  np.testing.assert_array_equal(np.sort(objs.train_images[:, 0, 0, 0]), np.arange(12))

  some = data.load_tfds(
    "shiftbench_tiny_test", classes=["cat", 0], data_dir=str(tmp_path), download=False, max_train=3, max_test=1
  )
  values = some.train_images[:, 0, 0, 0]
  kept = objs.train_images[np.isin(objs.train_labels, [2, 0]), 0, 0, 0]
  np.testing.assert_array_equal(values, kept[:3])  # the first objects after class filtering
  np.testing.assert_array_equal(some.train_labels, np.where(values % 3 == 2, 0, 1))
  assert some.class_names == ("cat", "ant") and len(some.test_labels) == 1


def test_load_tfds_under_mock_data(monkeypatch):
  monkeypatch.setattr(tfds_source, "has_network", lambda *args, **kwargs: True)
  with tfds.testing.mock_data(num_examples=20):
    objs = data.load_tfds("mnist", classes=[3, 1, 7], max_train=4)
    fashion = data.load_tfds("fashion_mnist", classes=["Trouser", "Bag"])
  assert objs.train_images.shape == (4, 28, 28, 1) and objs.train_images.dtype == np.uint8
  assert objs.class_names == ("3", "1", "7") and objs.train_labels.max() < 3
  assert fashion.class_names == ("Trouser", "Bag") and set(fashion.test_labels) <= {0, 1}


def test_missing_dataset_without_network_fails_at_once_with_instructions(tmp_path):
  if tfds_source.has_network():
    pytest.skip("this machine has network; the next test covers the message with a fake probe")
  with pytest.raises(data.DatasetNotFoundError) as info:
    data.load_tfds("mnist", data_dir=str(tmp_path))
  message = str(info.value)
  for part in (
    "'mnist'",
    str(tmp_path),
    "unreachable",
    "pip install 'shiftbench[tfds]'",
    "download_and_prepare(file_format='array_record')",
    "data.data_dir",
  ):
    assert part in message
  assert not os.listdir(tmp_path)  # nothing half-written


@pytest.mark.parametrize("download", [True, False])
def test_missing_dataset_error_names_dataset_and_dir(tmp_path, monkeypatch, download):
  monkeypatch.setattr(tfds_source, "has_network", lambda *args, **kwargs: False)
  monkeypatch.chdir(tmp_path)
  with pytest.raises(data.DatasetNotFoundError, match="download=False" if not download else "unreach"):
    data.load_tfds("emnist/letters", data_dir="rel", download=download)
  with pytest.raises(data.DatasetNotFoundError, match=f"in {tmp_path / 'rel'} "):
    data.load_tfds("emnist/letters", data_dir="rel", download=download)


def test_unknown_dataset_name_lists_close_names(tmp_path):
  with pytest.raises(ValueError, match="mnsit.*mnist"):
    data.load_tfds("mnsit", data_dir=str(tmp_path))


def test_network_probe_fails_fast_on_an_unresolvable_host():
  assert not tfds_source.has_network("no-such-host.invalid", timeout=1.0)


def test_tfrecord_dataset_without_tensorflow_says_how_to_read_it():
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow is installed, so tfrecord datasets are readable")

  class TfrecordBuilder:
    info = types.SimpleNamespace(full_name="mnist/3.0.1", file_format=types.SimpleNamespace(value="tfrecord"))
    data_dir = "/data/mnist/3.0.1"

    def as_data_source(self, split):
      raise NotImplementedError("not a random-access format")

  with pytest.raises(ImportError, match=r"tfrecord.*pip install 'shiftbench\[tfds\]'"):
    tfds_source.read_split(TfrecordBuilder(), "train", ("image", "label"))
