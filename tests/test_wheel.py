"""The wheel: built from the checkout and installed into a fresh virtual environment (its system site packages
give jax and the rest), `shiftbench` runs from a directory outside the checkout with the wheel's own package
and configs, not the checkout's (an editable install of the checkout may be on the same system), and with a
user's config folder beside it (test_config_dir.py's)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_overrides
from test_config_dir import write_my_configs

ROOT = Path(__file__).resolve().parent.parent
# What a build would read but must not see: pip builds in the source tree, and a build/ left there by an
# earlier build would put its stale files into the wheel.
NOT_SOURCES = shutil.ignore_patterns(
  ".git",
  "build",
  "dist",
  "*.egg-info",
  "__pycache__",
  ".*_cache",
  "outputs",
  "multirun",
  "wandb",
  ".venv",
  "venv",
  "reference_runs",
)


def _run(args: list, **kwargs) -> subprocess.CompletedProcess:
  run = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs)
  assert run.returncode == 0, f"{args}:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
  return run


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_checkout(tmp_path, tiny_data_dir):
  src = tmp_path / "src"
  shutil.copytree(ROOT, src, symlinks=True, ignore=NOT_SOURCES)
  # No build isolation: the build backend installed here, not one fetched from the network.
  _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", src, "-w", tmp_path / "dist"])
  (wheel,) = (tmp_path / "dist").glob("shiftbench-*.whl")
  venv = tmp_path / "venv"
  _run([sys.executable, "-m", "venv", "--system-site-packages", venv])
  _run([venv / "bin" / "pip", "install", "-q", "--no-deps", wheel])

  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
  where = _run(
    [
      venv / "bin" / "python",
      "-c",
      "import shiftbench, shiftbench.conf, hydra_plugins.shiftbench_launcher as p; "
      "from shiftbench.rows import reference; assert [s.preset for s in reference.shipped()][0] == 'quick'; "
      "print(shiftbench.__file__, shiftbench.conf.__file__, p.__file__, sep='\\n')",
    ],
    env=env,
    cwd=elsewhere,
  )
  for path in where.stdout.split():
    assert Path(path).is_relative_to(venv) and not Path(path).is_relative_to(ROOT), where.stdout

  shown = _run([venv / "bin" / "shiftbench", "--cfg", "job", "logger=none"], env=env, cwd=elsewhere)
  cfg = yaml.safe_load(shown.stdout)
  assert list(cfg["model"]) == ["cnn_fc"] and cfg["logger"]["mode"] == "disabled"

  mine = write_my_configs(tmp_path / "my_configs")
  run_dir = tmp_path / "run"
  tiny = tiny_overrides(tiny_data_dir, str(tmp_path / "ckpt"))
  scratch = ["model=mynet", "pretrain.regimes=[scratch]", "finetune.scratch_modes=[full]", f"hydra.run.dir={run_dir}"]
  _run([venv / "bin" / "shiftbench", "--config-dir", mine, *tiny, *scratch], env=env, cwd=elsewhere)
  rows = json.loads((run_dir / "results.json").read_text())["rows"]
  assert [(r["model"], r["pretrain"], r["finetune"]) for r in rows] == [("mynet", "scratch", "full")]
