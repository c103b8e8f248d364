"""Failures the user can fix, as one exception family with one-line messages.

`cli.main` prints any `UserError` as the last line of stderr (`error: <message>`) and exits 1, whatever
`HYDRA_FULL_ERROR` says, so the cause is never buried under a traceback or Hydra's own hint. Each class
also derives from the builtin that callers and tests caught before it existed (ValueError, ...).
"""

from __future__ import annotations

# Errors of this process's jobs, printed last by `cli.main`. Kept here, not in cli.py: under
# `python -m shiftbench.cli` that module is loaded twice (`__main__` and the callback's import).
reported: list[Exception] = []


class UserError(Exception):
  """A bad input, file or setting: the message names it and says what to do, on one line."""

  def __init__(self, message: str):
    super().__init__(" ".join(str(message).split()))  # one line, whatever the caller wrote


class ConfigError(UserError, ValueError):
  """A config key or value is unknown or out of its domain."""


class DataError(UserError, ValueError):
  """A dataset or results file is missing, corrupted or degenerate."""


class MissingFileError(UserError, FileNotFoundError):
  """A file the config names (weights, a dataset) does not exist."""


class CacheError(UserError, RuntimeError):
  """A cached artifact (pretrained checkpoint) cannot be written, read or verified."""


class DivergenceError(UserError, FloatingPointError):
  """Training diverged: the loss became non-finite or rose far above where it started."""
