"""Where a result was computed: package versions, Python, platform and the JAX devices (every results file
records it)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

import jax

_PACKAGES = (
  "shiftbench",
  "jax",
  "jaxlib",
  "flax",
  "optax",
  "orbax-checkpoint",
  "tensorflow-datasets",
  "hydra-core",
  "wandb",
  "numpy",
)


def environment() -> dict[str, Any]:
  """Package versions, Python, platform and the JAX devices a result was computed on."""
  versions = {}
  for name in _PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  # The code that ran, not what pip last recorded: an editable install keeps the metadata of the version
  # it was installed at.
  from shiftbench import __version__

  versions["shiftbench"] = __version__
  devices = jax.devices()
  return {
    "versions": versions,
    "python": platform.python_version(),
    "platform": platform.platform(),
    "backend": jax.default_backend(),
    "devices": [f"{d.platform}:{d.device_kind}" for d in devices],
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
