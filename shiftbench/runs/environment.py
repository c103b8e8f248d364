"""Where a result was computed: package versions, Python, platform and the JAX devices (every results file
records it)."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shlex
import sys
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


def command() -> str:
  """The command line that started this process, as a user would type it: `shiftbench seeds=[0,1]`."""
  program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
  if program in ("cli.py", "__main__.py"):
    program = "python -m shiftbench.cli" if program == "cli.py" else "python -m shiftbench"
  return " ".join([program, *(shlex.quote(a) for a in sys.argv[1:])])


def environment() -> dict[str, Any]:
  """Package versions, Python, platform and the JAX devices a result was computed on; the command and the
  UTC time it started (the run adds `wall_seconds` when its last row is done)."""
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
    "command": command(),
    "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    "versions": versions,
    "python": platform.python_version(),
    "platform": platform.platform(),
    "backend": jax.default_backend(),
    "devices": [f"{d.platform}:{d.device_kind}" for d in devices],
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
