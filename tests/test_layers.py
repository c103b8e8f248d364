"""The import contracts (pyproject's [tool.importlinter], checked by `lint-imports` in .ci/run) name
packages, never modules: every top-level package or module of shiftbench has a layer, a new module inside a
package needs no edit, and a contract does fail when an import breaks it."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _contracts() -> list[dict]:
  return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _layered() -> set[str]:
  (layers,) = [c for c in _contracts() if c["type"] == "layers"]
  return {m.strip() for layer in layers["layers"] for part in layer.split("|") for m in part.split(":")}


def _top_level() -> set[str]:
  package = ROOT / "shiftbench"
  modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
  return modules | {p.parent.name for p in package.glob("*/__init__.py")}


def test_every_top_level_package_and_module_has_a_layer():
  assert _top_level() - _layered() == set(), "add these to a layer in pyproject.toml [tool.importlinter]"
  assert _layered() - _top_level() == set(), "the contract names packages that do not exist"


def test_the_contracts_name_packages_not_modules():
  """Only the entry points (cli, launchers, api) are modules; every other name is a package."""
  named = set(_layered())
  for contract in _contracts():
    named |= {m.removeprefix("shiftbench.") for m in contract.get("source_modules", [])}
  modules = {n for n in named if not (ROOT / "shiftbench" / n / "__init__.py").exists()}
  assert modules == {"cli", "launchers", "api"}


def test_a_broken_contract_fails(tmp_path):
  """An upward import (infra importing runs) and JAX in the claims each make `lint-imports` fail."""
  copy = tmp_path / "repo"
  shutil.copytree(ROOT / "shiftbench", copy / "shiftbench", ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
  lint = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"]
  env = {"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"}
  kept = subprocess.run(lint, cwd=copy, capture_output=True, text=True, env=env)
  assert kept.returncode == 0, kept.stdout[-2000:]
  hashing = copy / "shiftbench" / "infra" / "hashing.py"
  hashing.write_text(hashing.read_text() + "\nfrom shiftbench.runs import settings  # noqa\n")
  (copy / "shiftbench" / "claims" / "new_family.py").write_text("import jax  # noqa\n")
  broken = subprocess.run(lint, cwd=copy, capture_output=True, text=True, env=env)
  assert broken.returncode == 1
  assert "shiftbench.infra.hashing -> shiftbench.runs.settings" in broken.stdout
  assert "shiftbench.claims.new_family -> jax" in broken.stdout
  # The upward import breaks the layers, makes a cycle and brings the config system into infra; jax breaks one.
  assert "Contracts: 0 kept, 4 broken." in broken.stdout


def test_the_table_tool_starts_without_jax():
  modules = "shiftbench.reporting.leaderboard, shiftbench.reporting.tidy, shiftbench.reporting.tracking"
  out = subprocess.run(
    [sys.executable, "-c", f"import {modules}, sys; print('jax' in sys.modules)"], capture_output=True, text=True
  )
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "False"


def test_the_documented_tree_lists_every_package_and_no_other():
  """docs/development.md shows the layout as a tree of packages, checked here so it cannot drift."""
  text = (ROOT / "docs" / "development.md").read_text()
  tree = text[text.index("```\nshiftbench/\n") : text.index("conf/ ")]
  documented = {line.split()[0].rstrip("/") for line in tree.splitlines()[2:] if line.startswith("  ")}
  documented.discard("cli.py,")
  packages = {p.parent.name for p in (ROOT / "shiftbench").glob("*/__init__.py")} - {"conf"}
  assert documented == packages
