"""The training schedule (shiftbench/training/schedule.py), on its own: pure Python, no JAX, nothing trained."""

import subprocess
import sys

import pytest

from shiftbench.training.schedule import schedule, steps_per_dispatch


def _bounds(s):
  return [(c.start, c.stop) for c in s.chunks]


def _check_back_to_back(s, start=0):
  """Chunks cover [start, steps) without gaps, each at most k steps, scanned exactly when k long."""
  assert [c.start for c in s.chunks] == [start] + [c.stop for c in s.chunks[:-1]]
  assert (s.chunks[-1].stop if s.chunks else start) == s.steps
  for c in s.chunks:
    assert 1 <= c.size <= s.k and c.scan == (c.size == s.k)
    assert c.dispatches == ((c.start,) if c.scan else tuple(range(c.start, c.stop)))


def test_a_known_schedule_chunk_by_chunk():
  # 7 steps, 3 per dispatch, a curve point at 2: one-step dispatches up to 2, a scan to 5, then two single steps.
  s = schedule(7, 3, evaluate=True, eval_steps=(2,), log_every=5)
  assert _bounds(s) == [(0, 2), (2, 5), (5, 7)]
  assert [c.scan for c in s.chunks] == [False, True, False]
  assert [c.dispatches for c in s.chunks] == [(0, 1), (2,), (5, 6)]
  assert [c.evaluate for c in s.chunks] == [True, False, False]  # the end is evaluated after training
  assert [c.log for c in s.chunks] == [False, True, True]  # 5 is a log step; the end always logs
  assert s.eval_steps == (0, 2, 7) and s.checkpoint_steps == ()


def test_chunks_end_at_every_evaluation_step_and_nowhere_else_early():
  s = schedule(23, 5, evaluate=True, eval_every=7, eval_steps=(3, 10, 40, 0, 3))  # 40 past the end, 0 is always
  _check_back_to_back(s)
  assert s.eval_steps == (0, 3, 7, 10, 14, 21, 23)
  assert _bounds(s) == [(0, 3), (3, 7), (7, 10), (10, 14), (14, 19), (19, 21), (21, 23)]
  # The fine-tune protocol's shape: curve points 10 and 50, every 50, 10 steps per dispatch (`auto`).
  s = schedule(200, "auto", evaluate=True, eval_every=50, eval_steps=(10, 50))
  assert s.k == 10 and all(c.scan for c in s.chunks) and s.eval_steps == (0, 10, 50, 100, 150, 200)


def test_without_evaluation_the_points_do_not_cut_chunks():
  s = schedule(23, 5, evaluate=False, eval_every=7, eval_steps=(3,))
  _check_back_to_back(s)
  assert _bounds(s) == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
  assert s.eval_steps == () and not s.evaluate_start and not s.evaluate_end


def test_checkpoints_fall_on_multiples_of_the_dispatch_and_never_at_the_end():
  s = schedule(100, 10, checkpoint_every=15)  # rounded up to 20, so every chunk is a full scan
  _check_back_to_back(s)
  assert s.checkpoint_steps == (20, 40, 60, 80) and all(c.scan for c in s.chunks)
  s = schedule(50, 4, evaluate=True, eval_steps=(10,), checkpoint_every=8)
  _check_back_to_back(s)
  assert s.checkpoint_steps == (8, 16, 24, 32, 40, 48) and 10 in s.eval_steps


@pytest.mark.parametrize("at", [20, 40, 60, 80])
def test_a_resumed_schedule_is_the_rest_of_the_uninterrupted_one(at):
  kw = dict(evaluate=True, eval_every=30, eval_steps=(5, 25), checkpoint_every=15, log_every=7)
  whole, resumed = schedule(100, 10, **kw), schedule(100, 10, resume_from=at, **kw)
  _check_back_to_back(resumed, start=at)
  assert resumed.chunks == tuple(c for c in whole.chunks if c.start >= at)
  assert not resumed.evaluate_start and resumed.evaluate_end


def test_logging_follows_log_every_where_chunks_are_cut_short():
  s = schedule(30, 4, evaluate=True, eval_steps=(6,), log_every=10)
  # chunk ends 4, 6, 10, 14, 18, 22, 26, 30: logged where a multiple of 10 was reached in the chunk
  assert [c.stop for c in s.chunks if c.log] == [10, 22, 30]


def test_steps_per_dispatch():
  assert steps_per_dispatch("auto") == 10 and steps_per_dispatch(3) == 3 and steps_per_dispatch("4") == 4
  with pytest.raises(ValueError, match="steps_per_dispatch must be >= 1 or 'auto', got 0"):
    steps_per_dispatch(0)


def test_the_schedule_imports_no_jax():
  code = "import sys, shiftbench.training.schedule; print('jax' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "False"
