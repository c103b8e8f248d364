"""Resumable training: a run stopped after a checkpoint and resumed ends bit-identical to one never stopped."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from shiftbench.data import canvas
from shiftbench.data.device import DeviceObjects
from shiftbench.models import ShiftNet
from shiftbench.training import loop as train
from shiftbench.training import programs, resume

SPEC = canvas.CanvasSpec(16, 6)
STEPS = 40
TX = optax.adam(1e-2)  # one object: the compiled step is cached per optimiser, so every run reuses it


def _bars(n=60, k=3):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, k, n)
  images = np.zeros((n, 6, 6, 1), np.uint8)
  images[np.arange(n), 2 * labels, :, 0] = 255
  return DeviceObjects.from_numpy(images, labels, k)


def _model(head="fc"):
  # The fc head (hidden layer + classifier): the most parameters and optimiser state to carry over.
  return ShiftNet(num_classes=3, canvas_size=16, widths=(4,), head=head, fc_hidden=(6,), rngs=nnx.Rngs(0))


def _state(model):
  return jax.tree.map(np.asarray, nnx.state(model))


class _Preempted(Exception):
  pass


class _StopAfter(resume.Checkpoints):
  """Checkpoints that stop the run right after saving step `at`, as a preemption would."""

  def __init__(self, directory, every, at):
    super().__init__(directory, every)
    self.at = at

  def save(self, step, state, history):
    super().save(step, state, history)
    if step == self.at:
      raise _Preempted(step)


def _run(checkpoints=None, dispatch=10):
  model = _model()
  history = train.train(
    model,
    TX,
    _bars(),
    SPEC,
    train.Placement("translate", (0, 0)),
    steps=STEPS,
    batch_size=8,
    seed=3,
    dispatch=dispatch,
    log_every=5,
    checkpoints=checkpoints,
  )
  return _state(model), history


def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path, caplog, dispatch=10):
  plain, plain_history = _run(dispatch=dispatch)
  with pytest.raises(_Preempted):
    _run(_StopAfter(tmp_path / "ck", 10, at=20), dispatch)
  # The last one kept: orbax dropped step 10 when it saved step 20.
  assert sorted(p.name for p in (tmp_path / "ck").iterdir() if p.name.isdigit()) == ["20"]
  with caplog.at_level("INFO", logger="shiftbench.training.loop"):
    resumed, history = _run(resume.Checkpoints(tmp_path / "ck", 10), dispatch)
  assert "resumed from step 20 of 40" in caplog.text
  jax.tree.map(np.testing.assert_array_equal, resumed, plain)
  assert history == plain_history
  fresh, _ = _run(resume.Checkpoints(tmp_path / "other", 10), dispatch)  # checkpointing alone changes nothing
  jax.tree.map(np.testing.assert_array_equal, fresh, plain)


def test_resuming_really_skips_the_steps_before_the_checkpoint(tmp_path, monkeypatch):
  with pytest.raises(_Preempted):
    _run(_StopAfter(tmp_path / "ck", 10, at=30))
  starts = []
  real = programs._compiled_update

  def spy(*args):
    program = real(*args)
    return lambda *a: (starts.append(int(a[4])), program(*a))[1]

  monkeypatch.setattr(programs, "_compiled_update", spy)
  _run(resume.Checkpoints(tmp_path / "ck", 10))
  assert starts == [30]  # one scan of 10 steps from step 30; steps 0-29 never run again


def test_a_checkpoint_of_another_model_is_a_warning_and_a_fresh_start(tmp_path, caplog):
  with pytest.raises(_Preempted):
    _run(_StopAfter(tmp_path / "ck", 10, at=10))
  model = _model(head="gap")  # other parameter shapes
  target = {
    "params": nnx.state(model, nnx.Param),
    "opt_state": TX.init(nnx.state(model, nnx.Param)),
    "rest": nnx.state(model, nnx.Not(nnx.Param)),
  }
  with caplog.at_level("WARNING"):
    assert resume.Checkpoints(tmp_path / "ck", 10).latest(target) is None
  assert "cannot resume from the checkpoint of step 10" in caplog.text and "starting from step 0" in caplog.text
  assert resume.Checkpoints(tmp_path / "ck", 0).latest(target) is None  # checkpoint_every=0: never resumes
