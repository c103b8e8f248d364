"""Writes scikit-learn's bundled handwritten digits (UCI, 1797 images of 8x8, no download) as a shiftbench
`.npz`, so the protocol runs on real handwriting offline:

  pip install scikit-learn
  python scripts/sklearn_digits_npz.py digits.npz
  shiftbench experiment=reproduce data=npz data.path=$PWD/digits.npz   # A: digits 0-4, B: digits 5-9

shiftbench resizes the 8x8 images to `canvas.object_size` itself (`shiftbench.data.resize_objects`);
the test split is a seeded, class-stratified 20% (`data.*.test_fraction`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def digits_arrays() -> dict[str, np.ndarray]:
  """images (1797, 8, 8) float in [0, 1] (the dataset's 0-16 ink levels), labels, class names."""
  from sklearn.datasets import load_digits

  digits = load_digits()
  return {
    "images": (digits.images / 16.0).astype(np.float32),
    "labels": digits.target.astype(np.int64),
    "class_names": np.array([str(k) for k in digits.target_names]),
  }


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out", type=Path, help="the .npz file to write")
  args = parser.parse_args(argv)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(args.out, **digits_arrays())
  print(f"wrote {args.out} ({len(digits_arrays()['labels'])} images of 8x8, 10 classes)")


if __name__ == "__main__":
  main()
