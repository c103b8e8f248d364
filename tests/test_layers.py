"""The import contract (pyproject's [tool.importlinter], checked by `lint-imports` in .ci/run) covers every
module: a new module must be given a layer, or it would sit outside every rule."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _layered() -> set[str]:
  config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
  (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
  return {m.strip() for layer in layers["layers"] for part in layer.split("|") for m in part.split(":")}


def test_every_top_level_module_has_a_layer():
  package = ROOT / "shiftbench"
  modules = {f"shiftbench.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
  modules |= {f"shiftbench.{p.parent.name}" for p in package.glob("*/__init__.py")}
  assert modules - _layered() == set(), "add these modules to a layer in pyproject.toml [tool.importlinter]"
  assert _layered() - modules == set(), "the contract names modules that do not exist"


def test_the_table_tool_starts_without_jax():
  code = "import shiftbench.leaderboard, shiftbench.tidy, shiftbench.tracking, sys; print('jax' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"
