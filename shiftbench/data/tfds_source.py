"""Real datasets through tensorflow-datasets by name (`mnist`, `fashion_mnist`, `emnist/letters`, ...).

Prepared datasets are read with random access (`builder.as_data_source()`), which needs no TensorFlow
when they are stored as array_record; tfrecord datasets fall back to `tf.data` and need the `tfds` extra.
A missing dataset fails at once with one message that says how to get it: TFDS's own download retries
for minutes on a machine without network, so connectivity is probed first with a short timeout.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants as tfds_constants
from tensorflow_datasets.core.utils import tqdm_utils

from shiftbench.data.objects import ObjectSet, select_classes
from shiftbench.infra import network
from shiftbench.infra.errors import DataError, UserError

_PROBE_HOST = "storage.googleapis.com"  # where TFDS downloads most datasets from
_EXTRA = "pip install 'shiftbench[tfds]'"


class DatasetNotFoundError(UserError, RuntimeError):
  """A dataset is not prepared locally and cannot be downloaded here."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> str:
  """An absolute data dir (Hydra may change the cwd); None means TFDS's default (`$TFDS_DATA_DIR`)."""
  if data_dir is None:
    return os.path.abspath(os.path.expanduser(tfds_constants.get_default_data_dir()))
  data_dir = os.fspath(data_dir)
  if "://" in data_dir:  # gs://... and other remote filesystems stay as they are
    return data_dir
  return os.path.abspath(os.path.expanduser(data_dir))


def has_network(host: str = _PROBE_HOST, port: int = 443, timeout: float = 3.0) -> bool:
  """Whether TFDS's download host (or `host`) answers within `timeout` seconds."""
  return network.reachable(host, port, timeout)


@contextlib.contextmanager
def quiet_tfds() -> Iterator[None]:
  """Silences TFDS's per-split progress bars and info-level logging, restoring them afterwards."""
  was_active = getattr(tqdm_utils, "_active", True)  # TFDS has a setter but no getter
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  tfds.display_progress_bar(False)
  absl_logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    tfds.display_progress_bar(was_active)
    absl_logger.setLevel(level)


def _missing_message(name: str, data_dir: str, reason: str) -> str:
  prepare = (
    f"import tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='{data_dir}')"
    ".download_and_prepare(file_format='array_record')"
  )
  return (
    f"TFDS dataset '{name}' is not prepared in {data_dir} and {reason}. To get it, on a machine "
    f'with network run: {_EXTRA} && python -c "{prepare}", then copy {data_dir} to this '
    "machine, or set data.data_dir to a directory that holds it."
  )


def _check_registered(name: str, data_dir: str) -> None:
  """Raises ValueError with close names if `name` is neither a TFDS builder nor a folder in data_dir."""
  base = name.split("/")[0].split(":")[0]
  known = tfds.list_builders(with_community_datasets=False)
  if base in known or "://" in data_dir or os.path.isdir(os.path.join(data_dir, base)):
    return
  close = difflib.get_close_matches(base, known, n=5, cutoff=0.6)
  hint = f"did you mean {', '.join(close)}?" if close else "see tfds.list_builders()"
  raise ValueError(f"unknown TFDS dataset {name!r}: {hint}")


def _stack(examples: Sequence[dict[str, Any]], key: str) -> np.ndarray:
  try:
    return np.stack([np.asarray(ex[key]) for ex in examples])
  except ValueError as e:
    raise ValueError(f"feature {key!r} has examples of different shapes; objects must share one shape") from e


def read_split(
  builder: tfds.core.DatasetBuilder, split: str, keys: Sequence[str], limit: int | None = None
) -> dict[str, np.ndarray]:
  """Reads the first `limit` (default all) examples of a prepared split into stacked numpy arrays.

  Args:
    builder: a prepared builder.
    split: the split name.
    keys: the features to read.
    limit: read at most this many examples.

  Returns:
    One stacked array per key.
  """
  try:
    source = builder.as_data_source(split=split)
  except NotImplementedError:  # not a random-access format: tfrecord
    return _read_split_tf(builder, split, keys, limit)
  indices = list(range(len(source) if limit is None else min(len(source), limit)))
  try:
    examples = source.__getitems__(indices)  # one batched read: twice as fast as n lookups
  except TypeError:  # `tfds.testing.mock_data`'s stand-in has a broken `__getitems__` (tfds 4.9.10)
    examples = [source[i] for i in indices]
  return {k: _stack(examples, k) for k in keys}


def _read_split_tf(
  builder: tfds.core.DatasetBuilder, split: str, keys: Sequence[str], limit: int | None
) -> dict[str, np.ndarray]:
  if importlib.util.find_spec("tensorflow") is None:
    raise ImportError(
      f"{builder.info.full_name} in {builder.data_dir} is stored as "
      f"{builder.info.file_format.value}, which needs TensorFlow to read: {_EXTRA} "
      "(or prepare it again with file_format='array_record')"
    )
  if limit is not None:
    split = f"{split}[:{limit}]"
  arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
  return {k: np.asarray(arrays[k]) for k in keys}


def _feature_keys(info: tfds.core.DatasetInfo) -> tuple[str, str]:
  """The (image, label) feature names: `image`/`label`, else the supervised keys."""
  features = info.features
  if "image" in features and "label" in features:
    return "image", "label"
  keys = info.supervised_keys
  if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
    return keys
  raise ValueError(f"{info.full_name} has no image/label features (features: {list(features)})")


def _as_objects(images: np.ndarray) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim == 3:  # (N, h, w) -> (N, h, w, 1)
    images = images[..., None]
  if images.ndim != 4 or images.dtype != np.uint8:
    raise ValueError(f"expected uint8 images of shape (N, h, w[, C]), got {images.shape} {images.dtype}")
  return images


def load_tfds(
  name: str,
  classes: list[int | str] | None = None,
  data_dir: str | None = None,
  download: bool = True,
  max_train: int | None = None,
  max_test: int | None = None,
) -> ObjectSet:
  """Loads a TFDS image-classification dataset's train and test splits as objects.

  Args:
    name: TFDS name, optionally with config and version, e.g. "mnist", "emnist/letters".
    classes: classes to keep, as label indices or names (`info.features['label'].names`), relabelled
      0..K-1 in this order; None keeps all.
    data_dir: where prepared datasets live; None is TFDS's default (`~/tensorflow_datasets` or
      `$TFDS_DATA_DIR`).
    download: whether to download and prepare the dataset if it is missing.
    max_train: keep at most the first this many training objects (after class filtering).
    max_test: the same for test objects.

  Returns:
    The objects, with the channels the dataset has (1 for grey, 3 for RGB).

  Raises:
    ValueError: for an unknown dataset name (with close names) or unknown classes.
    DatasetNotFoundError: if the dataset is missing and cannot be downloaded here.
  """
  for key, limit in (("max_train", max_train), ("max_test", max_test)):
    if limit is not None and limit < 0:
      raise ValueError(f"{key} must be >= 0 or None, got {limit}")
  data_dir = resolve_data_dir(data_dir)
  _check_registered(name, data_dir)
  with quiet_tfds():  # TFDS warns about the missing folder before we can say it better
    builder = tfds.builder(name, data_dir=data_dir)
    prepared = builder.is_prepared()
  if not prepared:
    if not download:
      raise DatasetNotFoundError(_missing_message(name, data_dir, "download=False was given"))
    if not has_network():
      raise DatasetNotFoundError(_missing_message(name, data_dir, f"{_PROBE_HOST} is unreachable"))
    try:
      builder.download_and_prepare(file_format="array_record")
    except ImportError as e:  # preparing most datasets needs TensorFlow
      raise DatasetNotFoundError(_missing_message(name, data_dir, f"preparing it failed ({e})")) from e

  image_key, label_key = _feature_keys(builder.info)
  label_feature = builder.info.features[label_key]
  splits = {}
  for split, limit in (("train", max_train), ("test", max_test)):
    # Without a class filter, only the first `limit` examples need decoding.
    try:
      with quiet_tfds():
        arrays = read_split(builder, split, (image_key, label_key), None if classes else limit)
    except ImportError:
      raise
    except Exception as e:  # array_record, protobuf and decoder errors: the prepared files are bad
      raise DataError(
        f"TFDS dataset '{name}' in {builder.data_dir} cannot be read ({type(e).__name__}: "
        f"{str(e)[:200]}); it may be truncated or corrupted: delete {builder.data_dir} and "
        "prepare it again"
      ) from e
    splits[split] = (_as_objects(arrays[image_key]), arrays[label_key].astype(np.int64), limit)

  if isinstance(label_feature, tfds.features.ClassLabel):
    names: Sequence[str] = label_feature.names
  else:
    top = max(int(y.max(initial=0)) for _, y, _ in splits.values())
    names = [str(i) for i in range(top + 1)]
  out = {}
  for split, (images, labels, limit) in splits.items():
    images, labels, class_names = select_classes(images, labels, classes, names)
    out[split] = (images[:limit], labels[:limit])
  return ObjectSet(name, *out["train"], *out["test"], class_names)
