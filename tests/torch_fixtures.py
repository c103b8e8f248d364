"""What PyTorch computed for the known-answer tests, read back without torch (`tests/fixtures/torch_twins.npz`).

`scripts/make_torch_fixtures.py` (the `bench` extra) runs the PyTorch twins of torchvision's networks
(`scripts/torchvision_twins.py`) and torch's pooling ops, and stores what they returned. The weights and
inputs are not stored (the VGG classifiers alone would be tens of MB): both sides draw them here, from
PCG64's raw bits (`random_raw`, fixed by the algorithm, unlike numpy's distribution samplers), so the tests
rebuild the exact arrays torch saw. The fixture records each state dict's sha256 to prove it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "torch_twins.npz"
# The known-answer networks: 1/8 of every channel count at 64 px takes every architecture through all its
# stages; 10 classes. The `seed` of each is len(arch), as before the fixtures.
KNOWN_ANSWER = {"width": 0.125, "size": 64, "num_classes": 10, "batch": 2, "input_seed": 0}
# The published-weights and paper-preset tests load a 1/16-width VGG-11 with ImageNet's 1000 classes.
VGG11_SMALL = {"arch": "vgg11", "width": 0.0625, "num_classes": 1000, "seed": 0}
# (n, out) of the adaptive average pool cases; n of the 3x3 stride-2 max pool cases.
ADAPTIVE_POOL = ((2, 7), (3, 7), (7, 7), (10, 7), (9, 3), (5, 1))
MAX_POOL = (7, 8, 15)


def uniform(seed: Sequence[int], shape: Sequence[int]) -> np.ndarray:
  """float32 array of `shape`, uniform on [-sqrt(3), sqrt(3)) (mean 0, variance 1), from PCG64 seeded by
  `seed` (a SeedSequence entropy list). The same bits on every numpy version and platform."""
  n = int(np.prod(shape, dtype=np.int64))
  raw = np.random.PCG64(np.random.SeedSequence(list(seed))).random_raw(n)
  unit = (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1), 53 bits
  return ((2.0 * unit - 1.0) * 3.0**0.5).astype(np.float32).reshape(shape)


def random_state_dict(spec: Mapping[str, Sequence[int]], seed: int) -> dict[str, np.ndarray]:
  """Random weights for a torchvision state dict of these names and shapes, BatchNorm running statistics
  and affine parameters included. Scales keep activations O(1) through deep stacks (He-like conv and
  linear weights), so a relative error means something at the last layer too."""
  bn_modules = {k.rsplit(".", 1)[0] for k in spec if k.endswith(".running_mean")}
  out = {}
  for i, (key, shape) in enumerate(spec.items()):
    module, name = key.rsplit(".", 1)
    if name == "num_batches_tracked":
      out[key] = np.zeros(shape, np.int64)
      continue
    u = uniform((seed, i), shape)
    if module in bn_modules:
      if name == "running_var":  # 0.5 + [0, 1)
        out[key] = 0.5 + (u / 3.0**0.5 + 1.0) / 2.0
      else:
        out[key] = {"weight": 1.0 + 0.2 * u, "bias": 0.1 * u, "running_mean": 0.2 * u}[name]
    elif name == "weight":
      out[key] = u * (2.0 / int(np.prod(shape[1:]))) ** 0.5
    else:
      out[key] = 0.1 * u
    out[key] = out[key].astype(np.float32)
  return out


def digest(arrays: Mapping[str, np.ndarray]) -> str:
  """sha256 over names, dtypes, shapes and bytes, in order."""
  h = hashlib.sha256()
  for key, value in arrays.items():
    h.update(f"{key}:{value.dtype.str}:{value.shape}".encode())
    h.update(np.ascontiguousarray(value).tobytes())
  return h.hexdigest()


def known_answer_input() -> np.ndarray:
  """The (batch, size, size, 3) NHWC input of the known-answer tests."""
  k = KNOWN_ANSWER
  return uniform((k["input_seed"],), (k["batch"], k["size"], k["size"], 3))


def pool_input(n: int) -> np.ndarray:
  """The (2, n, n + 1, 3) NHWC input of the pooling cases."""
  return uniform((1000 + n,), (2, n, n + 1, 3))


@cache
def _load() -> tuple[dict, dict[str, np.ndarray]]:
  with np.load(FIXTURE) as f:
    arrays = {k: f[k] for k in f.files}
  return json.loads(str(arrays.pop("meta"))), arrays


def meta() -> dict:
  """What the script recorded: torch's version, the settings and seeds above, each state dict's spec and
  sha256."""
  return _load()[0]


def state_dict(name: str) -> dict[str, np.ndarray]:
  """The state dict the twin `name` (an arch, or `vgg11_small`) ran with, rebuilt; checked against the
  fixture's sha256 so a drift in the drawing fails here, not as a numerical mismatch."""
  entry = meta()["state_dicts"][name]
  sd = random_state_dict({k: tuple(s) for k, s in entry["spec"]}, entry["seed"])
  assert digest(sd) == entry["sha256"], f"{name}: the rebuilt weights differ from the ones torch ran"
  return sd


def outputs(name: str) -> list[np.ndarray]:
  """The arrays torch returned for case `name`, in order (for a twin: each block's NCHW activations, then
  the logits)."""
  arrays = _load()[1]
  n = sum(1 for k in arrays if k.startswith(f"{name}/"))
  return [arrays[f"{name}/{i}"] for i in range(n)]
