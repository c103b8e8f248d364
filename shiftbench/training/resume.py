"""Periodic, resumable training checkpoints (orbax `CheckpointManager`, the last one kept).

A preempted or requeued pretraining continues from its last checkpoint instead of step 0. What a step
computes depends only on (params, optimiser state, other model state, step): the random key of step t
is `fold_in(key(seed), t)`, so the step *is* the random state, and a resumed run is bit-identical to an
uninterrupted one on the same device (tests/test_resume.py). The logged history rides along, so the
resumed run's metadata is the same too.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpoints:
  """The resumable checkpoints of one training run, in `directory` (created on the first save).

  Args:
    directory: where they live; one run per directory.
    every: save after every `every` steps (0: never, so `latest` finds nothing).
    label: names the run in log lines.
  """

  def __init__(self, directory: str | Path, every: int, label: str = "train"):
    self.directory, self.every, self.label = Path(directory).absolute(), int(every), label
    self._manager: ocp.CheckpointManager | None = None

  def _open(self) -> ocp.CheckpointManager:
    if self._manager is None:
      # Synchronous: the async manager leaves non-daemon threads behind after a failure (see pretrained.py).
      options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    return self._manager

  def save(self, step: int, state: Any, history: list[dict[str, float]]) -> None:
    """Saves `state` (a pytree of arrays) and the logged history as of `step`; older ones are dropped."""
    self._open().save(
      step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(history))
    )

  def latest(self, target: Any) -> tuple[int, Any, list[dict[str, float]]] | None:
    """(step, state shaped like `target`, history) of the last checkpoint, or None when there is none.

    A checkpoint that cannot be restored (from another configuration, or damaged) is reported in one
    warning and training starts from step 0; orbax only lists checkpoints whose save completed.
    """
    if self.every <= 0 or not self.directory.is_dir():
      return None
    manager = self._open()
    step = manager.latest_step()
    if step is None:
      return None
    try:
      out = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), history=ocp.args.JsonRestore())
      )
    except Exception as e:  # orbax raises several types for a tree it cannot read into `target`
      log.warning(
        "%s: cannot resume from the checkpoint of step %d in %s (%s: %s); starting from step 0",
        self.label,
        step,
        self.directory,
        type(e).__name__,
        str(e)[:200],
      )
      return None
    return step, out.state, list(out.history)

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()
      self._manager = None
