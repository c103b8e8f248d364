"""A user's own objects from a `.npz` file.

Keys:
  images: (N, H, W) or (N, H, W, C); uint8, or float in [0, 1] (scaled to uint8).
  labels: (N,) integers in [0, K).
  test_images, test_labels: optional; without them a seeded, class-stratified `test_fraction` of the
    objects is held out for testing.
  class_names: optional (K,) strings; default "0".."K-1".
"""

from __future__ import annotations

import os

import numpy as np

from shiftbench.data import subsets
from shiftbench.data.objects import ObjectSet, select_object_classes
from shiftbench.infra.errors import DataError


def _images(array: np.ndarray, key: str) -> np.ndarray:
  """Checks and converts images to (N, H, W, C) uint8."""
  if array.ndim == 3:
    array = array[..., None]
  if array.ndim != 4:
    raise ValueError(f"{key!r} must have shape (N, H, W) or (N, H, W, C), got {array.shape}")
  if array.dtype == np.uint8:
    return array
  if np.issubdtype(array.dtype, np.floating):
    if array.size and (np.nanmin(array) < 0.0 or np.nanmax(array) > 1.0 or np.isnan(array).any()):
      raise ValueError(f"float {key!r} must lie in [0, 1], got range [{array.min()}, {array.max()}]")
    return np.rint(array * 255.0).astype(np.uint8)
  raise ValueError(f"{key!r} must be uint8 or float in [0, 1], got {array.dtype}")


def _labels(array: np.ndarray, key: str, images: np.ndarray, images_key: str) -> np.ndarray:
  if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
    raise ValueError(f"{key!r} must be a 1-D integer array, got {array.shape} {array.dtype}")
  if array.shape[0] != images.shape[0]:
    raise ValueError(
      f"{key!r} has shape {array.shape} but {images_key!r} has shape {images.shape}: one label per image is needed"
    )
  if array.size and array.min() < 0:
    raise ValueError(f"{key!r} must be >= 0, got {array.min()}")
  return array.astype(np.int32)


def load_npz(
  path: str,
  classes: list[int] | str | None = None,
  test_fraction: float = 0.2,
  seed: int = 0,
) -> ObjectSet:
  """Loads objects from a `.npz` file (keys in the module docstring).

  Args:
    path: the file; relative paths are resolved against the current directory now.
    classes: classes to keep (label indices, or names if the file has `class_names`), relabelled
      0..K-1 in this order; None keeps all; "first_half" / "second_half" split the sorted classes in
      two (the default split of `conf/data/npz.yaml`: A pretrains on one half, B fine-tunes on the other).
    test_fraction: fraction of each class held out for testing when the file has no test arrays.
    seed: seed of that hold-out.

  Returns:
    The objects, named "npz:<absolute path>".

  Raises:
    FileNotFoundError: if the file does not exist.
    ValueError: for a missing key (the message lists the keys present) or inconsistent shapes.
  """
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if not os.path.isfile(path):
    raise FileNotFoundError(f"npz file not found: {path}")
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
  except Exception as e:  # zipfile, zlib, EOF and format errors: all mean "not a readable .npz"
    raise DataError(
      f"{path} is not a readable .npz file ({type(e).__name__}: {e}); it may be truncated or "
      "corrupted: write it again with numpy.savez"
    ) from e

  def need(key: str) -> np.ndarray:
    if key not in arrays:
      raise ValueError(f"{path} has no key {key!r}; keys present: {sorted(arrays)}")
    return arrays[key]

  images = _images(need("images"), "images")
  labels = _labels(need("labels"), "labels", images, "images")
  if images.shape[0] == 0:
    raise DataError(f"{path} holds no objects ('images' has shape {images.shape})")
  if ("test_images" in arrays) != ("test_labels" in arrays):
    need("test_images"), need("test_labels")  # raises for whichever one is missing
  if "test_images" in arrays:
    test_images = _images(arrays["test_images"], "test_images")
    test_labels = _labels(arrays["test_labels"], "test_labels", test_images, "test_images")
    if test_images.shape[1:] != images.shape[1:]:
      raise ValueError(
        f"'test_images' objects have shape {test_images.shape[1:]} but 'images' objects have shape {images.shape[1:]}"
      )
  else:
    if not 0.0 < test_fraction < 1.0:
      raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    # Chosen by a seeded hash of each object: the same objects whatever the order of the file.
    train_idx, test_idx = subsets.split_validation(images, labels, test_fraction, seed, min_held=1)
    images, labels, test_images, test_labels = (
      images[train_idx],
      labels[train_idx],
      images[test_idx],
      labels[test_idx],
    )

  num_classes = int(max(labels.max(initial=-1), test_labels.max(initial=-1))) + 1
  if "class_names" in arrays:
    class_names = tuple(str(n) for n in arrays["class_names"])
    if len(class_names) < num_classes:
      raise ValueError(f"'class_names' has {len(class_names)} names but labels go up to {num_classes - 1}")
  else:
    class_names = tuple(str(k) for k in range(num_classes))
  objs = ObjectSet(f"npz:{path}", images, labels, test_images, test_labels, class_names)
  if isinstance(classes, str):
    classes = _half(classes, np.unique(labels).tolist(), path)
  return select_object_classes(objs, classes)


def _half(which: str, present: list[int], path: str) -> list[int]:
  """The first or second half of the classes present (the first half gets the extra one if odd)."""
  if which not in ("first_half", "second_half"):
    raise ValueError(f"classes={which!r} is not a list; allowed strings: first_half, second_half")
  if len(present) < 2:
    raise ValueError(f"{path} has {len(present)} class(es); splitting into halves needs at least 2")
  mid = (len(present) + 1) // 2
  return present[:mid] if which == "first_half" else present[mid:]
