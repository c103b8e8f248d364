"""The install extras: `.[test]` resolves no torch (from the public index it is a multi-GB CUDA build), the
tests read what PyTorch computed from `tests/fixtures/torch_twins.npz` instead, and every third-party module
the package imports is declared."""

import ast
import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> set[str]:
  return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def _top_level_imports(path: Path) -> set[str]:
  """Modules a file imports at module level (not inside functions: those run only when called)."""
  found = set()
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, ast.Import):
      found |= {a.name.split(".")[0] for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      found.add(node.module.split(".")[0])
  return found


def test_the_test_extra_has_no_torch_and_scipy_is_a_dependency():
  test = _names(PROJECT["optional-dependencies"]["test"])
  assert "torch" not in test, "torch in the test extra: the tests read tests/fixtures/torch_twins.npz"
  assert "torch" in _names(PROJECT["optional-dependencies"]["bench"])  # scripts/make_torch_fixtures.py
  # shiftbench.claims.verdicts imports scipy at run time (its t quantiles)
  assert "scipy" in _names(PROJECT["dependencies"])


def test_no_test_module_imports_torch():
  """A test that needs torch skips without it (`pytest.importorskip`); none imports it unconditionally."""
  importers = sorted(p.name for p in (ROOT / "tests").glob("*.py") if "torch" in _top_level_imports(p))
  assert importers == []


def test_the_fixture_is_small_and_says_how_it_was_made():
  import torch_fixtures as tf

  assert tf.FIXTURE.stat().st_size < 2_000_000
  meta = tf.meta()
  assert meta["made_by"] == "python scripts/make_torch_fixtures.py" and meta["torch"].startswith("2.")
  assert set(meta["state_dicts"]) == {
    "vgg11",
    "vgg16",
    "vgg16_bn",
    "resnet18_tv",
    "resnet50",
    "densenet121",
    "vgg11_small",
  }
  with np.load(tf.FIXTURE) as f:
    assert all(f[k].dtype == np.float32 for k in f.files if k != "meta")


def test_the_fixture_is_what_torch_computes():
  """Regenerated and compared where torch is installed (the `bench` extra): ~1 s after torch's import."""
  pytest.importorskip("torch")
  import torch_fixtures as tf

  sys.path.insert(0, str(ROOT / "scripts"))
  try:
    import make_torch_fixtures
  finally:
    sys.path.remove(str(ROOT / "scripts"))
  meta, arrays = make_torch_fixtures.compute()
  assert {k: v["sha256"] for k, v in meta["state_dicts"].items()} == {
    k: v["sha256"] for k, v in tf.meta()["state_dicts"].items()
  }
  for key, value in arrays.items():
    case, i = key.split("/")
    stored = tf.outputs(case)[int(i)]
    np.testing.assert_allclose(stored, value, rtol=1e-5, atol=1e-5 * float(np.abs(value).max()), err_msg=key)
