"""shiftbench: where CNN translation invariance comes from, and how much fine-tuning at one location loses."""

import importlib.metadata as _metadata
import os as _os

# jax 0.10 sends CPU convolutions, dots, reductions and elementwise fusions to YNNPACK, whose convolutions
# run on one thread and whose other kernels were slower than XLA's own at this package's small shapes
# (docs/performance.md). The flag must be set before jax is imported, and only for jaxlib versions that
# know it (an unknown XLA flag aborts); a user's own `ynn_fusion_type` in XLA_FLAGS wins.
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-individual_dot,-dot,-reduce,-eltwise"


def _jaxlib_knows_ynn_flag() -> bool:
  try:
    major, minor = (int(p) for p in _metadata.version("jaxlib").split(".")[:2])
  except (_metadata.PackageNotFoundError, ValueError):
    return False
  return (major, minor) >= (0, 10)


if "ynn_fusion_type" not in _os.environ.get("XLA_FLAGS", "") and _jaxlib_knows_ynn_flag():
  _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " " + _YNN_FLAG).strip()

__version__ = "0.8.0"

# The Python API (`shiftbench.api`, docs/api.md), imported on first use: `import shiftbench` stays light
# (no JAX, no Hydra) for the tools that only read results. By name (importlib), so the import contracts do
# not read every module that imports `shiftbench` for its version as importing the API.
_API = ("Result", "evaluate", "list_experiments", "list_models")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> object:
  if name in _API:
    import importlib

    return getattr(importlib.import_module("shiftbench.api"), name)
  raise AttributeError(f"module 'shiftbench' has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted([*globals(), *_API])
