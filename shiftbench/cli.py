"""`shiftbench`: the Hydra entry point. It only composes the config and calls the library.

A failed job ends the process with exit code 1 and `error: <message>` as the last line of stderr, with
or without `HYDRA_FULL_ERROR`: Hydra's own report ends with its hint about that variable, which would
bury the cause. A `UserError` (bad key, value, file or cache) is printed as its message alone; any other
exception with its type, below Hydra's traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from shiftbench.infra.errors import UserError
from shiftbench.infra.errors import reported as _errors

# The configs ship inside the package (the top-level conf/, mapped to shiftbench.conf by setup.py), so an
# installed wheel finds them as a checkout does.
CONFIG_DIR = "pkg://shiftbench.conf"


class RunDirGuard(Callback):
  """Opens the run directory (`shiftbench.runs.run_dir`: writable, locked, resumable rows read) before Hydra
  writes `.hydra/` into it (`hydra.callbacks` in config.yaml), so a reused directory is refused while the
  earlier run's `.hydra/config.yaml` is still intact. The task gets the same open directory back; it is
  closed when the run ends.

  In a multirun Hydra writes each job's `.hydra/` before any job callback runs, so the sweep's existing
  `.hydra/` files are read at its start and travel with the jobs (the callback is pickled into submitit
  jobs); a refused job puts its directory's back, byte for byte (`_refuse_or_run`).
  """

  def __init__(self) -> None:
    self.hydra_files: dict[str, bytes] = {}

  def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
    from shiftbench.runs import run_dir

    task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    try:
      resolved = OmegaConf.to_container(task, resolve=True)
    except Exception:  # e.g. `${hydra:...}` before Hydra sets it up: the task opens the directory later
      return
    try:
      run_dir.open_run_dir(OmegaConf.select(config, "hydra.run.dir"), resolved, bool(task.get("overwrite", False)))
    except UserError as e:
      _errors.append(e)
      raise SystemExit(1) from e  # Hydra turns a callback's exceptions into warnings

  def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
    from shiftbench.runs import run_dir

    run_dir.close_run_dir(OmegaConf.select(config, "hydra.run.dir"))

  def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
    """An unwritable sweep directory is one line, before any job starts (Hydra's own is a traceback)."""
    from shiftbench.runs import preflight

    try:
      sweep = preflight.check_writable(
        OmegaConf.select(config, "hydra.sweep.dir"), "sweep directory", "choose another hydra.sweep.dir"
      )
    except UserError as e:
      _errors.append(e)
      raise SystemExit(1) from e
    self.hydra_files = {str(p): p.read_bytes() for p in sweep.glob("**/.hydra/*") if p.is_file()}

  def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
    _EARLIER_HYDRA_FILES.update(self.hydra_files)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _main(cfg: DictConfig) -> None:
  from shiftbench.runs.experiment import run_experiment  # after Hydra parsed args: `--help` stays instant

  logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every checkpoint step at INFO

  try:
    _refuse_or_run(cfg, Path(HydraConfig.get().runtime.output_dir), run_experiment)
  except Exception as e:
    _errors.append(e)  # Hydra reports it (and a multirun goes on to its next job); `main` prints it last
    raise


# A multirun's `.hydra/` files from before it started (see RunDirGuard), by absolute path.
_EARLIER_HYDRA_FILES: dict[str, bytes] = {}


def _refuse_or_run(cfg: DictConfig, output_dir: Path, run: Any) -> None:
  """Runs the job in its opened run directory; a multirun job refused for its directory (another
  config's run, or another process in it) first puts back the `.hydra/` files that Hydra rewrote there."""
  # The callback's copy: under `python -m shiftbench.cli` this module is also `__main__` (see errors.py).
  from shiftbench.cli import _EARLIER_HYDRA_FILES as files
  from shiftbench.runs import run_dir

  earlier = {p: b for p, b in files.items() if Path(p).parent == output_dir / ".hydra"}
  try:
    config = OmegaConf.to_container(cfg, resolve=True)
  except Exception:  # an unresolvable key: `run` reports it with its own one-line error
    run(cfg, output_dir)
    return
  with contextlib.ExitStack() as stack:
    try:
      stack.enter_context(run_dir.opened_run_dir(output_dir, config, bool(cfg.get("overwrite", False))))
    except UserError:
      for path, data in earlier.items():
        Path(path).write_bytes(data)
      raise
    run(cfg, output_dir)


def main() -> None:
  """Runs Hydra's app; ends with `error: <message>` when a job failed for a reason the user can fix."""
  code: Any = 0
  try:
    _main()
  except SystemExit as e:
    code = e.code
  except Exception as e:  # HYDRA_FULL_ERROR=1: Hydra re-raised it; keep its traceback, then the cause
    traceback.print_exc()
    if e not in _errors:
      _errors.append(e)
    code = 1
  if _errors:
    for line in dict.fromkeys(_one_line(e) for e in _errors):
      print(f"error: {line}", file=sys.stderr, flush=True)
    code = code or 1
  _exit(code)


def _one_line(e: BaseException) -> str:
  """A user error's own message; anything else (a bug, or a library's error) prefixed with its type."""
  text = " ".join(str(e).split())
  return text if isinstance(e, UserError) else f"{type(e).__name__}: {text}"


def _exit(code: Any) -> None:
  """Exits; after a failure, if a library left a non-daemon thread running (orbax after a failed save
  did), exits anyway rather than waiting on it forever: what was finished is already written."""
  if code and any(t is not threading.main_thread() and t.is_alive() and not t.daemon for t in threading.enumerate()):
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)
  sys.exit(code)


if __name__ == "__main__":
  main()
