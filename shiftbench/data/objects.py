"""The common currency of the data layer: an `ObjectSet` of small labelled images.

Every source (generated glyphs, TFDS datasets, user `.npz` files) returns one `ObjectSet`: uint8 images
of shape (N, h, w, C) and int32 labels in [0, K), for a train and a test split. The canvas code places
these objects on larger canvases on the device; nothing here knows about locations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: comparing arrays with `==` is ambiguous.
class ObjectSet:
  """Train and test objects of one dataset, with their class names.

  Attributes:
    name: where the objects came from, e.g. "glyphs/digits", "mnist", "npz:/abs/path.npz".
    train_images: (N, h, w, C) uint8.
    train_labels: (N,) int32 in [0, K).
    test_images: (M, h, w, C) uint8.
    test_labels: (M,) int32 in [0, K).
    class_names: length-K names; label `k` is `class_names[k]`.
  """

  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: tuple[str, ...]

  def __post_init__(self) -> None:
    # Fail where a source builds a bad set, not later inside a jitted step.
    for split in ("train", "test"):
      images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
      if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{self.name}: {split}_images must be (N, h, w, C) uint8, got {images.shape} {images.dtype}")
      if labels.dtype != np.int32 or labels.shape != images.shape[:1]:
        raise ValueError(
          f"{self.name}: {split}_labels must be int32 of shape {images.shape[:1]}, got {labels.shape} {labels.dtype}"
        )
      if labels.size and (labels.min() < 0 or labels.max() >= len(self.class_names)):
        raise ValueError(f"{self.name}: {split}_labels must lie in [0, {len(self.class_names)})")
    if self.train_images.shape[1:] != self.test_images.shape[1:]:
      raise ValueError(
        f"{self.name}: train objects {self.train_images.shape[1:]} and test objects "
        f"{self.test_images.shape[1:]} differ in shape"
      )

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def object_shape(self) -> tuple[int, int, int]:
    h, w, c = self.train_images.shape[1:]
    return int(h), int(w), int(c)


def require_task(objs: ObjectSet, side: str) -> None:
  """Fails unless both splits hold objects of at least 2 classes: with fewer, chance is 1 and every
  accuracy and consistency is 1 by construction, a perfect-looking row that measures nothing.

  Args:
    objs: a loaded dataset.
    side: which side of the protocol it is, for the message, e.g. "A (data.pretrain)".

  Raises:
    DataError: naming the dataset, the split and the class counts.
  """
  from shiftbench.infra.errors import DataError  # objects.py stays importable on its own

  counts = {split: len(np.unique(getattr(objs, f"{split}_labels"))) for split in ("train", "test")}
  sizes = {split: int(getattr(objs, f"{split}_images").shape[0]) for split in ("train", "test")}
  for split in ("train", "test"):
    if sizes[split] == 0:
      raise DataError(
        f"dataset {side} ({objs.name}) has an empty {split} split (train: {sizes['train']} "
        f"objects, test: {sizes['test']}); give it objects or choose other classes"
      )
  if min(counts.values()) < 2:
    raise DataError(
      f"dataset {side} ({objs.name}) has {counts['train']} class(es) in its train split and "
      f"{counts['test']} in its test split; a classification task needs at least 2 in each "
      "(give the dataset more classes, or choose its classes in the config)"
    )


def class_indices(classes: Sequence[int | str], names: Sequence[str]) -> list[int]:
  """Maps class names or indices to indices into `names`.

  Args:
    classes: class indices (ints) or class names (strings), possibly mixed.
    names: all class names of the dataset, in label order.

  Returns:
    The label index of each requested class, in the given order.

  Raises:
    ValueError: if a class is unknown or requested twice.
  """
  names = [str(n) for n in names]
  if not classes:
    raise ValueError(f"classes is empty; give class indices or names from {names}, or None for all")
  indices = []
  for c in classes:
    # numpy and OmegaConf integers are not `int` subclasses; strings stay names.
    if isinstance(c, str):
      if c not in names:
        raise ValueError(f"unknown class {c!r}; allowed class names: {names}")
      indices.append(names.index(c))
    else:
      i = int(c)
      if not 0 <= i < len(names):
        raise ValueError(f"unknown class {c!r}; allowed class indices: 0..{len(names) - 1} (names: {names})")
      indices.append(i)
  if len(set(indices)) != len(indices):
    raise ValueError(f"classes {list(classes)} name the same class twice")
  return indices


def select_classes(
  images: np.ndarray,
  labels: np.ndarray,
  classes: Sequence[int | str] | None,
  names: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """Keeps only the given classes and relabels them 0..K-1 in the given order.

  Args:
    images: (N, ...) objects.
    labels: (N,) integer labels indexing `names`.
    classes: class indices or names to keep, in the order of their new labels; None keeps all.
    names: class names of the current labels.

  Returns:
    (images, labels as int32, class names) of the kept objects, in their original order.

  Raises:
    ValueError: if a class is unknown (the message lists the allowed ones) or repeated.
  """
  labels = np.asarray(labels)
  if classes is None:
    return images, labels.astype(np.int32), tuple(str(n) for n in names)
  keep = class_indices(classes, names)
  lookup = np.full(max(len(names), int(labels.max(initial=0)) + 1), -1, np.int32)
  lookup[keep] = np.arange(len(keep), dtype=np.int32)
  new_labels = lookup[labels]
  mask = new_labels >= 0
  return images[mask], new_labels[mask], tuple(str(names[i]) for i in keep)


def select_object_classes(objs: ObjectSet, classes: Sequence[int | str] | None) -> ObjectSet:
  """`select_classes` applied to both splits of an `ObjectSet`."""
  if classes is None:
    return objs
  train_x, train_y, names = select_classes(objs.train_images, objs.train_labels, classes, objs.class_names)
  test_x, test_y, _ = select_classes(objs.test_images, objs.test_labels, classes, objs.class_names)
  return ObjectSet(objs.name, train_x, train_y, test_x, test_y, names)


def _resize_images(images: np.ndarray, size: int) -> np.ndarray:
  """Resizes (N, h, w, C) uint8 images to (N, size, size, C) with PIL's antialiased bicubic filter."""
  n, _, _, c = images.shape
  out = np.empty((n, size, size, c), np.uint8)
  for i in range(n):
    if c in (1, 3):  # one PIL call for grey and RGB images, per channel otherwise
      pil = Image.fromarray(images[i, ..., 0] if c == 1 else images[i])
      out[i] = np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC)).reshape(size, size, c)
    else:
      for j in range(c):
        pil = Image.fromarray(images[i, ..., j])
        out[i, ..., j] = np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC))
  return out


def resize_objects(objs: ObjectSet, size: int) -> ObjectSet:
  """Resizes every object to `size` x `size` (antialiased; uint8 kept; a no-op at that size).

  Args:
    objs: the objects.
    size: the new height and width in pixels.

  Returns:
    An `ObjectSet` with the same labels and resized images.
  """
  if size < 1:
    raise ValueError(f"size must be positive, got {size}")
  if objs.object_shape[:2] == (size, size):
    return objs
  return dataclasses.replace(
    objs, train_images=_resize_images(objs.train_images, size), test_images=_resize_images(objs.test_images, size)
  )
