"""A run's output directory, opened once per process: writable, locked, and what it already holds read.

`open_run_dir` checks that the directory can be written, takes its lock (one process per run directory,
`locks.run_dir`: a second `shiftbench` on it fails at once naming the holder), and reads the rows that a
previous run with the same config left in `results.json` (a requeued job resumes from them). The CLI
opens it before Hydra writes `.hydra/` into it; `run_experiment` then gets the same object back, so each
check and the lock happen once. Library users go through `run_experiment`, which opens it itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shiftbench.infra import locks
from shiftbench.infra.errors import ConfigError, DataError
from shiftbench.infra.files import to_jsonable
from shiftbench.reporting.tracking import GROUP_MAX
from shiftbench.rows import comparison, schema
from shiftbench.runs.preflight import check_writable, config_diff

RESULTS = "results.json"
# How a run was started and where it reports, not what it computed (the comparison key ignores these too).
_IGNORED = ("overwrite", "logger", "reference", "row_threads")
_OPEN: dict[str, RunDirectory] = {}


@dataclasses.dataclass
class RunDirectory:
  """An open run directory: its path, and the rows already done there, by `schema.RowId`."""

  path: Path
  done: dict[schema.RowId, dict[str, Any]]
  _lock: contextlib.AbstractContextManager | None = dataclasses.field(default=None, repr=False)

  @property
  def results_path(self) -> Path:
    return self.path / RESULTS


def _key(path: str | os.PathLike) -> str:
  return str(Path(path).expanduser().absolute())


def open_run_dir(path: str | os.PathLike, config: dict[str, Any], overwrite: bool = False) -> RunDirectory:
  """The run directory at `path`, opened: created if needed, checked writable, locked for this process
  until `close_run_dir`, and its resumable rows read. Opening it again in the same process returns the
  same object (the checks are not repeated).

  Raises:
    ConfigError: the directory cannot be written, or holds a run with another config or protocol version.
    locks.Busy: another process is running in it.
    DataError: its `results.json` cannot be read.
  """
  key = _key(path)
  if key in _OPEN:
    return _OPEN[key]
  resolved = check_writable(path, "run directory", "choose another hydra.run.dir")
  lock = locks.run_dir(resolved)
  lock.__enter__()
  try:
    opened = RunDirectory(resolved, resumable_rows(resolved / RESULTS, config, overwrite), lock)
  except BaseException:
    lock.__exit__(None, None, None)
    raise
  _OPEN[key] = opened
  return opened


def close_run_dir(path: str | os.PathLike) -> None:
  """Releases the lock of a run directory this process opened (a no-op when it did not)."""
  opened = _OPEN.pop(_key(path), None)
  if opened is not None and opened._lock is not None:
    opened._lock.__exit__(None, None, None)


@contextlib.contextmanager
def opened_run_dir(path: str | os.PathLike, config: dict[str, Any], overwrite: bool = False) -> Iterator[RunDirectory]:
  """The run directory for the block; closed after it only if this call opened it (else its opener,
  the CLI, closes it when the run ends)."""
  was_open = _key(path) in _OPEN
  run_dir = open_run_dir(path, config, overwrite)
  try:
    yield run_dir
  finally:
    if not was_open:
      close_run_dir(path)


def resumable_rows(path: Path, config: dict[str, Any], overwrite: bool = False) -> dict[schema.RowId, dict[str, Any]]:
  """Rows already in `results.json` from a run with the same config (a requeued job), by `schema.RowId`.

  A different config, or a file that cannot be read, is an error rather than a fresh start: starting
  afresh would overwrite the earlier run's rows and heatmaps. `overwrite=true` starts afresh on purpose.
  """
  if overwrite or not path.is_file():
    return {}
  fix = f"use a new hydra.run.dir, or add overwrite=true to replace the run in {path.parent}"
  try:
    previous = json.loads(path.read_text())
    rows, old = previous["rows"], previous["config"]
    keyed = {schema.identity(r): r for r in rows}
  except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise DataError(
      f"{path} exists but is not a readable shiftbench results file ({type(e).__name__}: {e}); {fix}"
    ) from e
  # Another protocol version computes other numbers: its rows never join this run's. Another package
  # version of the same protocol computes the same ones (a file without the field predates protocol versions).
  written = previous.get("protocol_version")
  if written != comparison.PROTOCOL_VERSION:
    package = ((previous.get("environment") or {}).get("versions") or {}).get("shiftbench")
    raise ConfigError(
      f"{path.parent} holds a run of protocol version {written or 'none (before protocol versions)'} "
      f"(shiftbench {package}), whose rows are not comparable with this protocol version's "
      f"({comparison.PROTOCOL_VERSION}); {fix}"
    )
  diff = config_diff(
    {k: v for k, v in old.items() if k not in _IGNORED},
    {k: v for k, v in to_jsonable(config).items() if k not in _IGNORED},
  )
  if diff:
    shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
    raise ConfigError(f"{path.parent} holds a run with a different config (differs in: {shown}); {fix}")
  return keyed


def experiment_group(output_dir: str | os.PathLike) -> str:
  """The experiment a run belongs to: Hydra's sweep directory in a multirun (every job of a sweep, SLURM
  jobs included, resolves the same one), else the run directory; its last `GROUP_MAX` characters."""
  group = str(output_dir)
  try:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    group = str(hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else hydra_cfg.run.dir)
  except ValueError:  # not under Hydra (library use, tests)
    pass
  return group[-GROUP_MAX:]
