"""How far a run is: a bar over its rows (k/N, elapsed, ETA) in a terminal, one plain line per row elsewhere.

The bar is tqdm's, drawn on stderr only when stderr is a terminal (`disable=None`); the pretraining and
fine-tuning bars of `training.loop` sit below it. While it is drawn, log lines go through `tqdm.write`
(`logging_redirect_tqdm`), so they print above the bars instead of through them. In a log file, a SLURM
job or under pytest nothing is drawn: each row's log line says where the run is instead (`status`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import IO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm


def _clock(seconds: float) -> str:
  """Seconds as `m:ss` or `h:mm:ss`, as tqdm writes them."""
  return tqdm.format_interval(seconds)


class Rows:
  """The run's progress over its rows: `total` in all, `done` of them finished before this process started
  (a resumed run), so the ETA counts only the rows run here.

  Args:
    total: every row of the run.
    done: rows already finished (read from `results.json`).
    file: where the bar goes (stderr); tests give a stream of their own.
  """

  def __init__(self, total: int, done: int = 0, file: IO[str] | None = None) -> None:
    self.total, self.done, self._resumed = total, done, done
    self._start = time.monotonic()
    self._redirect = contextlib.ExitStack()
    self.bar = tqdm(
      total=total,
      initial=done,
      desc="rows",
      unit="row",
      file=file if file is not None else sys.stderr,
      disable=None,  # drawn only on a terminal
      dynamic_ncols=True,
      smoothing=0,  # the ETA from the mean time per row: rows differ too much for a moving average
    )
    if self.drawn:  # log lines print above the bars, not through them
      self._redirect.enter_context(logging_redirect_tqdm())

  @property
  def drawn(self) -> bool:
    return not self.bar.disable

  def advance(self) -> str:
    """Counts one more finished row; the run's status, for that row's log line."""
    self.done += 1
    self.bar.update(1)
    return self.status()

  def status(self) -> str:
    """`row k/N, m:ss elapsed, ETA m:ss` (no ETA before a row has finished in this process)."""
    elapsed = time.monotonic() - self._start
    text = f"row {self.done}/{self.total}, {_clock(elapsed)} elapsed"
    ran = self.done - self._resumed
    if ran > 0 and self.done < self.total:
      text += f", ETA {_clock(elapsed / ran * (self.total - self.done))}"
    return text

  def close(self) -> None:
    """Removes the bar and gives the log lines their own handlers back; a second call does nothing."""
    self.bar.close()
    self._redirect.close()
