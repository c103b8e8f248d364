"""Class-balanced, seeded subsets of a split that do not depend on the order of the file.

Every place that evaluates "N test objects" takes a prefix of one order, `balanced_order`: each class's
objects sorted by a seeded hash of their content, then dealt out class by class (one of each class, then
the next of each, ...). Any prefix of it is therefore class-balanced (class counts differ by at most one
while every class still has objects), and the same objects are chosen whether the file is sorted by class
or shuffled: a prefix of a class-sorted file would be one class, and similarity (which needs pairs of
different classes) would be undefined.
"""

from __future__ import annotations

import hashlib

import numpy as np


def object_digests(images: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
  """A seeded 64-bit hash of each object's pixels and label: (N,) uint64."""
  salt = int(seed).to_bytes(8, "little", signed=True)
  images = np.ascontiguousarray(images)
  return np.array(
    [
      int.from_bytes(
        hashlib.blake2b(images[i].tobytes() + int(labels[i]).to_bytes(4, "little"), digest_size=8, salt=salt).digest(),
        "little",
      )
      for i in range(len(labels))
    ],
    dtype=np.uint64,
  )


def balanced_order(images: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
  """A permutation of the objects whose every prefix is class-balanced (see the module docstring).

  Args:
    images: (N, ...) objects.
    labels: (N,) integer labels.
    seed: which of many such orders; the same seed gives the same objects for every order of the file.

  Returns:
    (N,) int64 indices.
  """
  labels = np.asarray(labels)
  digests = object_digests(images, labels, seed)
  by_hash = np.lexsort((np.arange(len(labels)), digests))  # ties (duplicate objects) by position
  rank = np.empty(len(labels), np.int64)  # each object's rank within its class, in hash order
  for c in np.unique(labels):
    members = by_hash[labels[by_hash] == c]
    rank[members] = np.arange(len(members))
  # Deal by rank, then by class; within a (rank, class) pair there is exactly one object.
  return np.lexsort((labels, rank)).astype(np.int64)


def split_validation(
  images: np.ndarray, labels: np.ndarray, fraction: float, seed: int = 0, min_held: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """(kept indices, held-out indices): `fraction` of each class (at least `min_held`) held out, chosen by
  seeded hash, so the same objects are held out whatever the order of the file.

  At least one object per class is kept; a class of one object has none held out.
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"validation fraction must lie in [0, 1), got {fraction}")
  labels = np.asarray(labels)
  digests = object_digests(images, labels, seed)
  val = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    members = members[np.lexsort((members, digests[members]))]
    k = min(max(int(round(fraction * len(members))), min_held), len(members) - 1)
    val.append(members[:k])
  val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
  train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
  return train_idx, val_idx
