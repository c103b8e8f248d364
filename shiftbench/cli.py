"""`shiftbench`: the Hydra entry point. It only composes the config, checks it at the door and calls the library.

A failed run ends the process with exit code 1 and `error: <message>` as the last line of stderr. A user's
mistake (a `UserError`: bad key, value, file or cache; or an override, group option or launcher Hydra
refuses, `runs.hydra_errors`) is that line alone, with no traceback unless `HYDRA_FULL_ERROR=1` asks for
one; any other exception (a bug) is its traceback, then the line with its type. The config is checked
(`runs.door`) before JAX is imported, so a config mistake costs about a second.
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
from omegaconf.errors import InterpolationToMissingValueError

from shiftbench.infra.errors import UserError
from shiftbench.infra.errors import reported as _errors
from shiftbench.runs import door, hydra_errors, log_levels, targets

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
      OmegaConf.to_container(task, resolve=True)
    except InterpolationToMissingValueError:
      pass  # `data.path: ???`: the door names the key
    except Exception:  # e.g. `${hydra:...}` before Hydra sets it up: the task checks and opens it later
      return
    try:
      resolved = door.check(task)  # a config refused at the door (or by a target) leaves no run directory
      targets.check(resolved)
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
      preflight.check_launcher(OmegaConf.select(config, "hydra.launcher._target_"), _launcher_choice(config))
      sweep = preflight.check_writable(
        OmegaConf.select(config, "hydra.sweep.dir"), "sweep directory", "choose another hydra.sweep.dir"
      )
    except UserError as e:
      _errors.append(e)
      raise SystemExit(1) from e
    self.hydra_files = {str(p): p.read_bytes() for p in sweep.glob("**/.hydra/*") if p.is_file()}

  def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
    _EARLIER_HYDRA_FILES.update(self.hydra_files)


class SweepBoard(Callback):
  """Ends a multirun with one board and one claims report over all its jobs (`hydra.callbacks` in
  config.yaml), in `<sweep dir>/leaderboard/`: the code of `shiftbench-leaderboard` over the sweep
  directory, so a claim that pairs two jobs' rows (C4, GAP against FC) is judged across them. Where jobs
  have no results yet (failed, or still running when the launcher returned), it says which and prints the
  one command that makes the board once they are done. `~hydra.callbacks.sweep_board` turns it off.
  """

  def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
    _SWEEPS[_sweep_dir(config)] = _with_reference(config)

  def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
    sweep = _sweep_dir(config)
    _SWEEPS.pop(sweep, None)
    print(sweep_board(sweep, _with_reference(config)), flush=True)


# Sweeps started and not ended, each with whether its board shows the shipped reference rows (the sweep's
# `reference`): Hydra skips `on_multirun_end` when a job failed, so `main` makes their boards (over the
# jobs that finished) before its error line, as the callback would have.
_SWEEPS: dict[Path, bool] = {}


def _sweep_dir(config: DictConfig) -> Path:
  return Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).absolute()


def _with_reference(config: DictConfig) -> bool:
  """False where the sweep says `reference=false`: its board leaves out the shipped reference rows."""
  return OmegaConf.select(config, "reference", default=True) is not False


def sweep_board(sweep: Path, reference: bool = True, out_name: str = "leaderboard") -> str:
  """Writes the sweep's board into `sweep/out_name/` from every job's `results.json` (with the shipped
  reference rows unless `reference` is False: the sweep's `reference=false`); what it did, and the
  command that makes the board again (after the missing jobs finish), as text for the terminal."""
  import shlex

  from shiftbench.reporting import leaderboard

  out = sweep / out_name
  flags = [] if reference else ["--no-reference"]
  command = " ".join(["shiftbench-leaderboard", shlex.quote(str(sweep)), "--out", shlex.quote(str(out)), *flags])
  jobs = sorted({p.parent.parent for p in sweep.glob("**/.hydra/config.yaml")} - {sweep})
  finished = [j for j in jobs if (j / "results.json").is_file()]
  missing = [j.relative_to(sweep).as_posix() for j in jobs if j not in finished]
  lines = []
  if finished:
    try:
      leaderboard.main([str(sweep), "--out", str(out), *flags])
      lines.append(f"the sweep's board and claims over {len(finished)} jobs: {out}/")
    except SystemExit as e:  # its one-line `error: ...`
      lines.append(str(e.code))
  if missing:
    lines.append(f"{len(missing)} of {len(jobs)} jobs have no results.json yet: {', '.join(missing)}")
  if missing or not finished:
    lines.append(f"when they are done, make the sweep's board with: {command}")
  return "\n".join(lines)


def _launcher_choice(config: DictConfig) -> str | None:
  choices = OmegaConf.select(config, "hydra.runtime.choices")
  return choices.get("hydra/launcher") if choices is not None else None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _main(cfg: DictConfig) -> None:
  try:
    door.check(cfg)  # before JAX is imported (the next line): a config mistake is one line in about a second
    from shiftbench.runs.experiment import run_experiment

    log_levels.quiet_library_logs()
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
  """Runs Hydra's app; ends with `error: <message>` when a job failed, after its traceback only for a bug
  (or when `HYDRA_FULL_ERROR=1` asks for it)."""
  asked_for_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
  code: Any = 0
  try:
    with _hydra_raises():
      _main()
  except SystemExit as e:  # a callback refused the run (its error is in `_errors`), or Hydra's --help
    code = e.code
    if asked_for_traceback:
      for error in _errors:
        traceback.print_exception(error)
  except Exception as e:
    user_error = hydra_errors.as_user_error(e)
    if asked_for_traceback or user_error is None:
      traceback.print_exc()
    if e not in _errors:
      _errors.append(user_error or e)
    code = 1
  from shiftbench.cli import _SWEEPS as sweeps  # the callback's copy (this module may be `__main__`)

  for sweep, reference in sweeps.items():  # a multirun that ended in a failed job
    print(sweep_board(sweep, reference), flush=True)
  if _errors:
    for line in dict.fromkeys(_one_line(e) for e in _errors):
      print(f"error: {line}", file=sys.stderr, flush=True)
    code = code or 1
  _exit(code)


@contextlib.contextmanager
def _hydra_raises() -> Any:
  """Hydra reports an exception itself (a traceback, or its message and a hint about HYDRA_FULL_ERROR)
  unless HYDRA_FULL_ERROR=1, when it raises it: so it is set while Hydra runs, and `main` reports. Jobs
  that a launcher starts in other processes inherit it; Hydra reads it nowhere else."""
  before = os.environ.get("HYDRA_FULL_ERROR")
  os.environ["HYDRA_FULL_ERROR"] = "1"
  try:
    yield
  finally:
    if before is None:
      os.environ.pop("HYDRA_FULL_ERROR", None)
    else:
      os.environ["HYDRA_FULL_ERROR"] = before


def _one_line(e: BaseException) -> str:
  """A user error's own message; anything else (a bug, or a library's error) prefixed with its type."""
  user_error = hydra_errors.as_user_error(e)
  text = " ".join(str(user_error or e).split())
  return text if user_error is not None else f"{type(e).__name__}: {text}"


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
