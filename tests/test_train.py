"""Training: learns, is reproducible, freezes what it should, never retraces, and fails loudly on NaN."""

import functools
import logging

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from shiftbench import models
from shiftbench.data import canvas
from shiftbench.evaluators import location_maps
from shiftbench.evaluators.predictor import Predictor
from shiftbench.models import ShiftNet
from shiftbench.training import conv_forms, loop, optimizers, programs, stopping

SPEC = canvas.CanvasSpec(16, 6)


def _bars(n=120, k=3, seed=0):
  """Class k = a horizontal bar in row 2k of a 6x6 object: easy, so a few steps must learn it."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, k, n)
  images = np.zeros((n, 6, 6, 1), np.uint8)
  images[np.arange(n), 2 * labels, :, 0] = 255
  return loop.DeviceObjects.from_numpy(images, labels, k)


def _model(seed=0, head="gap"):
  return ShiftNet(num_classes=3, canvas_size=16, widths=(4, 8), head=head, fc_hidden=(6,), rngs=nnx.Rngs(seed))


def _params(model):
  return jax.tree.map(np.asarray, nnx.state(model, nnx.Param))


def test_training_learns_an_easy_task_at_one_location():
  data, model = _bars(), _model(head="fc")
  place = loop.Placement("fixed", (5, 5))
  hist = loop.train(model, optax.adam(1e-2), data, SPEC, place, steps=60, batch_size=32, seed=0, log_every=10)
  assert hist[-1]["loss"] < hist[0]["loss"]
  preds = location_maps.predict_grid(Predictor(model, 16), data.images, np.array([[5, 5]]))
  assert (preds[0] == np.asarray(data.labels)).mean() > 0.9


def test_same_seed_same_params_and_different_seed_differs():
  data, place = _bars(), loop.Placement("translate", (0, 0))
  runs = []
  for seed in (0, 0, 1):
    model = _model()
    loop.train(model, optax.adam(1e-3), data, SPEC, place, steps=5, batch_size=8, seed=seed)
    runs.append(_params(model))
  jax.tree.map(np.testing.assert_array_equal, runs[0], runs[1])
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(runs[0]), jax.tree.leaves(runs[2])))


def test_head_mode_leaves_the_backbone_untouched():
  data, model = _bars(), _model()
  before = _params(model)
  loop.train(
    model, optax.adam(1e-2), data, SPEC, loop.Placement("fixed", (2, 3)), steps=5, batch_size=8, seed=0, mode="head"
  )
  after = _params(model)
  jax.tree.map(np.testing.assert_array_equal, before["backbone"], after["backbone"])
  assert not np.array_equal(before["head"]["classifier"]["kernel"], after["head"]["classifier"]["kernel"])
  assert not np.array_equal(before["head"]["hidden"][0]["kernel"], after["head"]["hidden"][0]["kernel"])


def test_last_mode_trains_the_classifier_only():
  data, model = _bars(), _model()
  before = _params(model)
  loop.train(
    model, optax.adam(1e-2), data, SPEC, loop.Placement("fixed", (2, 3)), steps=5, batch_size=8, seed=0, mode="last"
  )
  after = _params(model)
  jax.tree.map(np.testing.assert_array_equal, before["backbone"], after["backbone"])
  jax.tree.map(np.testing.assert_array_equal, before["head"]["hidden"], after["head"]["hidden"])
  assert not np.array_equal(before["head"]["classifier"]["kernel"], after["head"]["classifier"]["kernel"])


def test_steps_compile_once_across_models_and_runs():
  data, place, tx = _bars(), loop.Placement("fixed", (0, 0)), optax.sgd(1e-2)
  for seed in (0, 1):
    loop.train(_model(seed), tx, data, SPEC, place, steps=3, batch_size=8, seed=seed)
  graphdef = nnx.split(_model(), nnx.Param, ...)[0]
  update = programs._compiled_update(graphdef, tx.update, SPEC, place, 8, 1)
  assert update._cache_size() == 1  # one trace for two models, two runs and three steps each


def test_every_fine_tune_rate_runs_one_program_with_the_numbers_of_its_own_optimiser():
  """Until 0.7.0 each rate built its own optimiser, so its rate was a constant of its compiled step and
  every rate compiled its programs again. Only the rate is injected: the numbers are bit-identical."""
  data, place = _bars(), loop.Placement("fixed", (0, 0))
  shared = optimizers.at_rates(functools.partial(optax.adam, b1=0.8), (1e-3, 1e-2))
  assert len({tx.update for tx in shared.values()}) == 1
  assert shared.at(1e-2) is shared[1e-2] and shared.at(5e-4).update is shared[1e-3].update  # any rate: same program
  with pytest.raises(KeyError):
    shared[5e-4]  # the run's rates are the mapping; other rates only through `at`
  trained = {}
  for lr, tx in [*shared.items(), ("own", optax.adam(1e-2, b1=0.8))]:
    trained[lr] = _model()
    loop.train(trained[lr], tx, data, SPEC, place, steps=4, batch_size=8, seed=0, dispatch=2)
  jax.tree.map(np.testing.assert_array_equal, _params(trained["own"]), _params(trained[1e-2]))
  assert not np.array_equal(*(jax.tree.leaves(_params(trained[lr]))[0] for lr in (1e-3, 1e-2)))
  graphdef = nnx.split(_model(), nnx.Param, ...)[0]
  assert programs._compiled_update(graphdef, shared[1e-3].update, SPEC, place, 8, 2)._cache_size() == 1


def test_a_program_compiled_ahead_is_the_one_training_runs_with_the_same_numbers():
  """The run compiles its training programs on a background thread (`programs.compile_ahead`) while rows run."""
  data, place, tx = _bars(), loop.Placement("fixed", (0, 0)), optax.adam(1e-2)
  seed = jax.random.key(0)
  programs.compile_ahead(
    nnx.eval_shape(_model), tx, data, SPEC, place, steps=4, batch_size=8, seed=seed, mode="head", dispatch=2
  )
  ahead, jitted = _model(), _model()
  loop.train(ahead, tx, data, SPEC, place, steps=4, batch_size=8, seed=seed, mode="head", dispatch=2)
  key, mode = next(k for k in programs._AHEAD if k[0][1] is tx.update)
  assert programs._compiled_update(*key)._cache_size() == 0  # jit never traced it: the program compiled ahead ran
  programs._AHEAD.pop((key, mode))
  loop.train(jitted, tx, data, SPEC, place, steps=4, batch_size=8, seed=seed, mode="head", dispatch=2)
  assert programs._compiled_update(*key)._cache_size() == 1
  jax.tree.map(np.testing.assert_array_equal, _params(ahead), _params(jitted))


def test_scanned_dispatch_equals_one_step_per_dispatch():
  data, place = _bars(), loop.Placement("random_crop", (5, 5), 2)
  results = []
  for k in (1, 3):
    model = _model()
    loop.train(model, optax.adam(1e-3), data, SPEC, place, steps=7, batch_size=8, seed=0, dispatch=k)
    results.append(_params(model))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *results)


class FlaxConvNet(nnx.Module):
  """A user's network written with plain `nnx.Conv` (XLA's own conv gradients unless told otherwise)."""

  def __init__(self, rngs: nnx.Rngs, conv_general_dilated=jax.lax.conv_general_dilated):
    conv = functools.partial(nnx.Conv, kernel_size=(3, 3), conv_general_dilated=conv_general_dilated, rngs=rngs)
    self.backbone = nnx.Sequential(conv(1, 4), jax.nn.relu, conv(4, 8), jax.nn.relu)
    self.head = nnx.Linear(8, 3, rngs=rngs)

  def __call__(self, x):
    return self.head(self.backbone(x).mean(axis=(1, 2)))


def test_convs_xla_cpu_runs_slowly_in_a_loop_are_the_gradients_not_in_its_eigen_form():
  x, kernel = jax.ShapeDtypeStruct((2, 8, 8, 3), np.float32), jax.ShapeDtypeStruct((3, 3, 3, 4), np.float32)

  def slow(conv):
    return conv_forms.slow_in_a_loop(jax.make_jaxpr(jax.grad(lambda x, k: conv(x, k).sum(), (0, 1)))(x, kernel))

  nhwc = ("NHWC", "HWIO", "NHWC")
  assert slow(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=nhwc)) == 2
  assert slow(lambda x, k: models.conv_general_dilated(x, k, (2, 2), "SAME", dimension_numbers=nhwc)) == 0
  conv = lambda c, k: jax.lax.conv_general_dilated(c, k, (1, 1), "SAME", dimension_numbers=nhwc)
  assert slow(lambda x, k: jax.lax.scan(lambda c, _: (c, conv(c, k)), x, length=2)[1]) == 2  # found in the scan
  nchw = jax.make_jaxpr(lambda x, k: jax.lax.conv(x, k, (1, 1), "SAME"))(np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3)))
  assert conv_forms.slow_in_a_loop(nchw) == 1  # a forward conv in another layout too


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="auto is 10 steps per dispatch off CPU")
def test_auto_trains_a_model_with_xlas_conv_gradients_one_step_per_dispatch_on_cpu_and_says_why(caplog):
  """XLA:CPU runs `nnx.Conv`'s gradients ~20x slower inside `lax.scan` (conv_forms): `auto` runs such a
  step once per dispatch; a frozen backbone (no conv gradients) or canonical gradients keep ten."""
  data, place, tx = _bars(), loop.Placement("fixed", (5, 5)), optax.adam(1e-2)

  def resolved(model, mode="full"):
    loop.train(model, tx, data, SPEC, place, steps=10, batch_size=8, seed=0, mode=mode)
    graphdef = nnx.split(model, models.trainable(mode), ...)[0]
    return programs._AUTO_DISPATCH[(graphdef, tx.update, SPEC, place, 8), mode]

  with caplog.at_level(logging.INFO, logger="shiftbench.training.programs"):
    assert resolved(FlaxConvNet(nnx.Rngs(0))) == 1
    said = "FlaxConvNet (full, fixed placement): 1 training step per dispatch, not 10 (steps_per_dispatch=auto): 3 of"
    assert said in caplog.text
    caplog.clear()
    assert resolved(FlaxConvNet(nnx.Rngs(0)), mode="head") == 10
    assert resolved(FlaxConvNet(nnx.Rngs(0), models.conv_general_dilated)) == 10
    assert resolved(_model()) == 10  # the shipped networks' convs
  assert caplog.text == ""
  one, auto = FlaxConvNet(nnx.Rngs(1)), FlaxConvNet(nnx.Rngs(1))
  loop.train(one, tx, data, SPEC, place, steps=3, batch_size=8, seed=0, dispatch=1)
  loop.train(auto, tx, data, SPEC, place, steps=3, batch_size=8, seed=0)
  jax.tree.map(np.testing.assert_array_equal, _params(one), _params(auto))  # the one-step program itself


def test_scanned_chunks_end_at_every_evaluation_step():
  # eval_every = 7 with 5 steps per dispatch: chunks are cut at 5, 7, 12, 14, ... so on_eval sees the
  # model after exactly the steps it asks for, the same model as one step per dispatch gives.
  data, place = _bars(), loop.Placement("random_crop", (5, 5), 2)
  runs = []
  for k in (1, 5):
    seen = []
    loop.train(
      _model(),
      optax.adam(1e-3),
      data,
      SPEC,
      place,
      steps=23,
      batch_size=8,
      seed=0,
      dispatch=k,
      eval_every=7,
      eval_steps=(3, 10, 40),  # early curve points; 40 is past the end and is dropped
      on_eval=lambda step, m, seen=seen: seen.append((step, _params(m))),
    )
    runs.append(seen)
  for one, scanned in zip(*runs):
    assert one[0] == scanned[0]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), one[1], scanned[1])
  assert [step for step, _ in runs[1]] == [0, 3, 7, 10, 14, 21, 23]


def _batch_accuracies(p: float, steps: int, batch: int, seed: int) -> np.ndarray:
  """Each step's batch accuracy when the true training accuracy is `p`: Binomial(batch, p) / batch."""
  return np.random.default_rng(seed).binomial(batch, p, steps) / batch


def _stop_step(rule: stopping.UntilAccuracy, accs: np.ndarray, per_dispatch: int) -> int | None:
  """Feeds the rule one dispatch at a time, as `loop.train` does; the step it stops at, or None."""
  for end in range(per_dispatch, len(accs) + 1, per_dispatch):
    if rule.update(end, accs[end - per_dispatch : end]):
      return end
  return None


@pytest.mark.parametrize("seed", range(5))
def test_running_mean_rule_stops_just_above_the_threshold_and_never_below(seed):
  # Biscione & Bowers stop on a running mean of training accuracy. At batch 32, threshold 0.95 and a
  # 200-step window the mean's sd is ~0.002: a true accuracy of 0.96 stops within a window or two of
  # steps; 0.94 (5 sd below) never does in 5000 steps. (A rule that needs every batch >= 0.95 for 500
  # steps fires with probability ~4e-7 at a true 0.97, so such runs go to the cap.)
  above = stopping.UntilAccuracy(threshold=0.95, window=200)
  step = _stop_step(above, _batch_accuracies(0.96, 5000, 32, seed), per_dispatch=10)
  assert step is not None and 200 <= step <= 400 and step % 10 == 0
  assert above.stopped_at == step and above.mean >= 0.95
  below = stopping.UntilAccuracy(threshold=0.95, window=200)
  assert _stop_step(below, _batch_accuracies(0.94, 5000, 32, seed), per_dispatch=10) is None
  assert below.stopped_at is None and below.mean < 0.95


def test_running_mean_rule_waits_for_a_full_window_and_records_itself():
  rule = stopping.UntilAccuracy(threshold=0.6, window=4)
  assert not rule.update(2, [1.0, 1.0]) and rule.mean is None  # two perfect steps are not a window of four
  assert not rule.update(4, [0.0, 0.0]) and rule.mean == 0.5
  assert not rule.update(6, [1.0, 1.0]) and rule.mean == 0.5  # the oldest two left the window
  assert rule.update(8, [1.0, 1.0]) and rule.stopped_at == 8 and rule.mean == 1.0
  assert rule.record() == {"rule": "until_accuracy", "threshold": 0.6, "window": 4, "final_mean": 1.0}


def test_nan_loss_stops_training_with_a_clear_error():
  data, model = _bars(), _model()
  with pytest.raises(FloatingPointError, match="loss became nan at step"):
    loop.train(
      model, optax.sgd(1e30), data, SPEC, loop.Placement("fixed", (0, 0)), steps=20, batch_size=8, seed=0, log_every=5
    )


def test_bad_mode_and_location_are_rejected():
  data, model = _bars(), _model()
  with pytest.raises(ValueError, match="unknown fine-tune mode 'partial'"):
    loop.train(
      model,
      optax.sgd(1e-2),
      data,
      SPEC,
      loop.Placement("fixed", (0, 0)),
      steps=1,
      batch_size=8,
      seed=0,
      mode="partial",
    )
  with pytest.raises(ValueError, match="puts the object off the canvas"):
    loop.train(model, optax.sgd(1e-2), data, SPEC, loop.Placement("fixed", (11, 0)), steps=1, batch_size=8, seed=0)
