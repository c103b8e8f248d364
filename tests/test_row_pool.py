"""Plan groups on several threads (`runs.row_pool`): the order tasks may run in, errors, and a real run whose
rows are bit-identical on one thread and on two."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from conftest import tiny_overrides
from hydra import compose, initialize_config_dir

from shiftbench.infra.errors import ConfigError
from shiftbench.runs import row_pool
from shiftbench.runs.experiment import run_experiment

CONF = Path(__file__).resolve().parent.parent / "conf"
GROUPS = {"g0": ["a", "b"], "g1": ["c"], "g2": ["d", "e", "f"]}


def _run(threads: int, prepare_s: float = 0.0, fail: str | None = None):
  """Runs GROUPS, recording (event, name, thread) in the order they happen."""
  events, lock = [], threading.Lock()

  def note(what, name):
    with lock:
      events.append((what, name, threading.current_thread().name))

  def prepare(group):
    note("start prepare", group)
    time.sleep(prepare_s)
    note("prepared", group)
    return group.upper()

  def run_part(group, part, value):
    assert value == group.upper()
    note("part", part)
    time.sleep(0.01)
    if part == fail:
      raise RuntimeError(f"part {part} failed")

  yielded = []
  for group in row_pool.run_groups(list(GROUPS), GROUPS.__getitem__, prepare, run_part, threads):
    note("yield", group)
    yielded.append(group)
  return events, yielded


def test_one_thread_runs_the_plan_in_order_on_the_callers_thread():
  events, yielded = _run(1)
  assert [(w, n) for w, n, _ in events if w != "start prepare"] == [
    ("prepared", "g0"), ("part", "a"), ("part", "b"), ("yield", "g0"),
    ("prepared", "g1"), ("part", "c"), ("yield", "g1"),
    ("prepared", "g2"), ("part", "d"), ("part", "e"), ("part", "f"), ("yield", "g2"),
  ]  # fmt: skip
  assert {t for *_, t in events} == {threading.current_thread().name}
  assert yielded == list(GROUPS)


def test_two_threads_run_each_task_once_parts_after_their_group_and_yield_in_plan_order():
  events, yielded = _run(2, prepare_s=0.05)
  assert yielded == list(GROUPS)
  parts = [n for w, n, _ in events if w == "part"]
  assert sorted(parts) == ["a", "b", "c", "d", "e", "f"]
  position = {(w, n): i for i, (w, n, _) in enumerate(events)}
  for group, group_parts in GROUPS.items():
    for part in group_parts:
      assert position["prepared", group] < position["part", part] < position["yield", group]
  # Both threads worked, and the second did not wait for g0's preparation: it started g1's.
  assert len({t for w, _, t in events if w != "yield"}) == 2
  assert position["start prepare", "g1"] < position["prepared", "g0"]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_failing_part_is_raised_and_nothing_starts_after_it(threads):
  with pytest.raises(RuntimeError, match="part c failed"):
    _run(threads, fail="c")
  events = []

  def run_part(group, part, value):
    events.append(part)
    if part == "c":
      raise RuntimeError("boom")
    time.sleep(0.05)

  with pytest.raises(RuntimeError, match="boom"):
    list(row_pool.run_groups(list(GROUPS), GROUPS.__getitem__, str.upper, run_part, threads))
  # Threads end when a task fails: at most the part already running beside "c" starts after it.
  assert len(events[events.index("c") + 1 :]) <= threads - 1


def test_stopping_early_joins_the_threads():
  names = lambda: {t.name for t in threading.enumerate() if t.name.startswith("shiftbench-rows")}
  gen = row_pool.run_groups(list(GROUPS), GROUPS.__getitem__, str.upper, lambda *a: time.sleep(0.01), 2)
  assert next(gen) == "g0"
  gen.close()  # the caller stops (an interrupt in the caller's loop): no thread is left running
  assert not names()


@pytest.mark.parametrize(
  ("value", "expected"), [(1, 1), (3, 3), ("4", 4), ("auto", min(2, len(__import__("os").sched_getaffinity(0))))]
)
def test_resolve_threads(value, expected):
  assert row_pool.resolve_threads(value) == expected


@pytest.mark.parametrize("value", [0, -1, "two", True])
def test_resolve_threads_refuses_in_one_line(value):
  with pytest.raises(ConfigError, match=r"row_threads=.*integer >= 1 or auto") as e:
    row_pool.resolve_threads(value)
  assert "\n" not in str(e.value)


TIMINGS = {"finetune_seconds", "eval_seconds", "seconds"}


def _numbers(tree):
  """Every value of a row but its timings."""
  if isinstance(tree, dict):
    return {k: _numbers(v) for k, v in tree.items() if k not in TIMINGS}
  if isinstance(tree, list):
    return [_numbers(v) for v in tree]
  return tree


@pytest.mark.slow
def test_rows_on_two_threads_are_bit_identical_to_rows_on_one(tiny_data_dir, tmp_path):
  """Two seeds x (scratch, translate), with LP-FT (a method row that starts from its rate's plain rows):
  on two threads the four groups' pretraining and rows interleave, and every number of every row stays the
  same."""
  rows = {}
  for threads in (1, 2):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
      cfg = compose(
        "config",
        overrides=tiny_overrides(tiny_data_dir, str(tmp_path / f"ckpt{threads}"))
        + [
          "model=gap",
          "seeds=[0,1]",
          "pretrain.regimes=[scratch,translate]",
          "finetune.modes=[last,full]",
          "finetune.methods=[plain,{_target_: shiftbench.methods.LPFT, probe_rates: [1e-3, 1e-1], probe_steps: 6}]",
          f"row_threads={threads}",
        ],
      )
    run_experiment(cfg, tmp_path / f"run{threads}")
    rows[threads] = json.loads((tmp_path / f"run{threads}" / "results.json").read_text())["rows"]
  assert len(rows[1]) == 2 * (1 + 3) == len(rows[2])
  assert [_numbers(r) for r in rows[2]] == [_numbers(r) for r in rows[1]]
