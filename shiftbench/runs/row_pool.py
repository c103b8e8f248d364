"""Plan groups run by a few threads at once (`row_threads`), with the same numbers as one after another.

Each `plan.Pretrained` group is one preparation (its pretrained model: restored, or trained now) and one
part per fine-tune rate (`plan.AtRate`: its rows, in order, since a rate's method rows start from its plain
rows). A part can run once its group is prepared; parts and preparations of different groups share
nothing but read-only data. Every thread takes the first task in plan order that can run, so one thread
runs exactly the sequential order, and a thread never waits for a preparation while another task could run.

Why threads: at laptop scale a training step is ~60 small XLA operations (docs/performance.md), too small
to keep two cores busy; two programs dispatched from two threads overlap. A compiled program's result does
not depend on what runs beside it (XLA:CPU partitions its work by its own thread count, not by load), so
every row is bit-identical to the sequential run's (tests/test_row_pool.py runs both).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from shiftbench.infra.errors import ConfigError
from shiftbench.runs import config_values

G = TypeVar("G")  # a group
P = TypeVar("P")  # a part of a group
V = TypeVar("V")  # what a group's preparation gives its parts

# `row_threads: auto`: two programs dispatched at once overlapped by 1.2-1.5x on the 2-core CPU; a third
# thread added nothing there (docs/performance.md), and on a GPU the programs queue on one device anyway.
AUTO_THREADS = 2


def resolve_threads(value: int | str | None) -> int:
  """`row_threads` as a count: an integer >= 1, or `auto` (AUTO_THREADS, at most the cores available)."""
  if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(AUTO_THREADS, cores))
  if not config_values.auto_or_positive(value):
    raise ConfigError(f"row_threads={value!r}: expected an integer >= 1 or auto")
  return int(value)


class _Tasks(Generic[G, P, V]):
  """The tasks of a run in plan order and what has happened to them, behind one condition variable."""

  def __init__(self, groups: Sequence[G], parts: Callable[[G], Sequence[P]]):
    self.groups = list(groups)
    self.parts = [list(parts(g)) for g in self.groups]
    # (group index, part index or None for the preparation), in plan order.
    self.pending: list[tuple[int, int | None]] = []
    for gi, group_parts in enumerate(self.parts):
      self.pending += [(gi, None)] + [(gi, pi) for pi in range(len(group_parts))]
    self.prepared: dict[int, V] = {}
    self.left = [len(p) for p in self.parts]
    self.errors: list[BaseException] = []
    self.stopped = False
    self.cond = threading.Condition()

  def take(self) -> tuple[int, int | None] | None:
    """The first pending task that can run (waits while none can but some are running); None when there
    is nothing left to do or the run stops."""
    with self.cond:
      while True:
        if self.errors or self.stopped or not self.pending:
          return None
        for i, (gi, pi) in enumerate(self.pending):
          if pi is None or gi in self.prepared:
            return self.pending.pop(i)
        self.cond.wait()

  def finish(self, task: tuple[int, int | None], value: V | None = None) -> None:
    gi, pi = task
    with self.cond:
      if pi is None:
        self.prepared[gi] = value
      else:
        self.left[gi] -= 1
      self.cond.notify_all()

  def fail(self, error: BaseException) -> None:
    with self.cond:
      self.errors.append(error)
      self.cond.notify_all()

  def stop(self) -> None:
    with self.cond:
      self.stopped = True
      self.cond.notify_all()

  def wait_for(self, gi: int) -> None:
    """Waits until group `gi` is prepared and all its parts have run; raises a worker's error."""
    with self.cond:
      while not self.errors and not (gi in self.prepared and self.left[gi] == 0):
        self.cond.wait()
      if self.errors:
        raise self.errors[0]


def run_groups(
  groups: Sequence[G],
  parts: Callable[[G], Sequence[P]],
  prepare: Callable[[G], V],
  run_part: Callable[[G, P, V], None],
  threads: int = 1,
  stop: threading.Event | None = None,
) -> Iterator[G]:
  """Prepares every group and runs its parts on `threads` threads; yields each group, in plan order, once
  all its parts have run.

  Args:
    groups: the groups, in plan order.
    parts: a group's parts, in the order they run.
    prepare: a group's preparation; its value goes to each of the group's parts.
    run_part: runs one part; it should return soon after `stop` is set (between rows).
    threads: 1 runs everything on the calling thread, in plan order.
    stop: set here when a task fails or the caller stops early (an interrupt): no task starts after it,
      and the tasks running end (between rows) before this returns or raises.

  Raises:
    The first error a task raised, once every thread has ended.
  """
  stop = stop or threading.Event()
  if threads <= 1:
    for group in groups:
      value = prepare(group)
      for part in parts(group):
        if stop.is_set():
          return
        run_part(group, part, value)
      yield group
    return

  tasks: _Tasks[G, P, V] = _Tasks(groups, parts)

  def work() -> None:
    while (task := tasks.take()) is not None:
      gi, pi = task
      group = tasks.groups[gi]
      try:
        if pi is None:
          tasks.finish(task, prepare(group))
        else:
          run_part(group, tasks.parts[gi][pi], tasks.prepared[gi])
          tasks.finish(task)
      except BaseException as e:  # noqa: BLE001 - handed to the caller's thread, which raises it
        stop.set()
        tasks.fail(e)
        return

  workers = [threading.Thread(target=work, name=f"shiftbench-rows-{i}") for i in range(threads)]
  for w in workers:
    w.start()
  try:
    for gi, group in enumerate(tasks.groups):
      tasks.wait_for(gi)
      yield group
      tasks.prepared[gi] = None  # its pretrained model is not needed any more
  finally:  # an error, an interrupt, or the caller stopped early: no new task; the running ones end
    stop.set()
    tasks.stop()
    for w in workers:
      w.join()
