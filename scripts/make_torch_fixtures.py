"""Writes tests/fixtures/torch_twins.npz: what PyTorch computes for the known-answer tests, so they run without torch.

Needs the `bench` extra (`pip install -e ".[bench]"`, torch 2.13.0). Run from the repository root:

    python scripts/make_torch_fixtures.py            # writes tests/fixtures/torch_twins.npz
    python scripts/make_torch_fixtures.py --check    # recomputes and compares with the committed file

For each torchvision architecture, its PyTorch twin (`scripts/torchvision_twins.py`, 1/8 width, 10 classes)
runs with random weights drawn by `tests/torch_fixtures.random_state_dict` (seed len(arch)) on a random
(2, 3, 64, 64) input: every block's activations and the logits are stored. So are torch's adaptive average
pool and 3x3 stride-2 max pool on small random inputs, and the state-dict layout of a 1/16-width VGG-11 with
1000 classes (the file the published-weights and paper-preset tests serve). Weights and inputs are not
stored: the tests draw the same arrays again (`tests/torch_fixtures.py`), checked by sha256.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests")]

import torch_fixtures as tf  # noqa: E402
import torchvision_twins as twins  # noqa: E402

ARCHS = ("vgg11", "vgg16", "vgg16_bn", "resnet18_tv", "resnet50", "densenet121")


def _nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def compute() -> tuple[dict, dict[str, np.ndarray]]:
  """The fixture's metadata and arrays."""
  torch.set_num_threads(1)  # the same summation order wherever it runs
  k = tf.KNOWN_ANSWER
  x = tf.known_answer_input()
  meta = {
    "made_by": "python scripts/make_torch_fixtures.py",
    "made_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    "torch": torch.__version__,
    "numpy": np.__version__,
    "known_answer": k,
    "input_sha256": tf.digest({"x": x}),
    "vgg11_small": tf.VGG11_SMALL,
    "state_dicts": {},
  }
  arrays: dict[str, np.ndarray] = {}
  with torch.no_grad():
    for arch in ARCHS:
      twin = twins.build(arch, k["width"], k["num_classes"])
      spec, seed = twins.spec(twin), len(arch)
      sd = tf.random_state_dict(dict(spec), seed)
      meta["state_dicts"][arch] = {"spec": spec, "seed": seed, "sha256": tf.digest(sd)}
      for i, out in enumerate(twins.load_numpy(twin, sd).forward_blocks(_nchw(x))):
        arrays[f"{arch}/{i}"] = out.numpy()
    small = tf.VGG11_SMALL
    spec = twins.spec(twins.build(small["arch"], small["width"], small["num_classes"]))
    sd = tf.random_state_dict(dict(spec), small["seed"])
    meta["state_dicts"]["vgg11_small"] = {"spec": spec, "seed": small["seed"], "sha256": tf.digest(sd)}
    for n, out in tf.ADAPTIVE_POOL:
      arrays[f"adaptive_avg_pool_{n}_{out}/0"] = F.adaptive_avg_pool2d(_nchw(tf.pool_input(n)), out).numpy()
    for n in tf.MAX_POOL:
      arrays[f"max_pool_3x3_s2_{n}/0"] = F.max_pool2d(_nchw(tf.pool_input(n)), 3, 2, 1).numpy()
  return meta, arrays


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=Path, default=tf.FIXTURE, help="where to write (default: %(default)s)")
  parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
  args = parser.parse_args()
  meta, arrays = compute()
  if args.check:
    with np.load(args.out) as f:
      old = {k: f[k] for k in f.files if k != "meta"}
    worst = max(float(np.abs(old[k] - v).max() / np.abs(v).max()) for k, v in arrays.items())
    if set(old) != set(arrays) or worst > 1e-6:
      sys.exit(f"{args.out} differs from what torch {torch.__version__} computes (largest relative error {worst:.1e})")
    print(f"{args.out}: {len(arrays)} arrays match torch {torch.__version__} (largest relative error {worst:.1e})")
    return
  args.out.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(args.out, meta=np.array(json.dumps(meta)), **arrays)
  size = args.out.stat().st_size
  print(f"wrote {args.out} ({size / 1e6:.2f} MB, {len(arrays)} arrays, torch {torch.__version__})")


if __name__ == "__main__":
  main()
