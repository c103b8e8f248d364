"""Faithful LP-FT, WiSE-FT along probe -> LP-FT, BatchNorm re-estimation, and what they stand on: the
context's compute-once facility and comparison keys from the methods' resolved arguments.

The identities (each prints the largest difference it saw, 0 in every case): LP-FT's stage 2 starts from
the fitted probe, bit for bit; its 0.7.0 setting (`probe_steps: null`, `rate_factor: 1`) is 0.7.0's
LP-FT, model and curve; WiSE-FT (probe -> LP-FT) at alpha = 0 is the probe and at 1 the LP-FT model; both
WiSE-FTs' ends stay their trained models on a BatchNorm network.
"""

import dataclasses
import gzip
import json
import threading
import time

import jax
import numpy as np
import pytest
from conftest import tiny_overrides
from flax import nnx
from test_methods import _compose, _largest_difference, _leaves
from test_schema import ROOT

from shiftbench import methods
from shiftbench.data import canvas
from shiftbench.data.device import DeviceObjects
from shiftbench.infra.errors import ConfigError
from shiftbench.models import ResNet, ShiftNet
from shiftbench.rows import comparison
from shiftbench.runs import plan, protocol_data
from shiftbench.runs.protocol import Protocol
from shiftbench.runs.settings import Settings
from shiftbench.runs.shared import Shared
from shiftbench.training import batchnorm, loop, step

RATES = (1e-3, 1e-2)
PROBE = dict(probe_rates=[1e-3, 1e-1], probe_steps=6)  # a tiny probe: two rates, six steps


# -- the parts, on their own --------------------------------------------------------------------------
def test_once_computes_once_for_callers_on_two_threads_and_retries_after_an_error():
  shared, calls, out = Shared(("m", "translate", 0)), [], []

  def compute():
    calls.append(1)
    time.sleep(0.05)  # the other thread asks while this one computes
    return object()

  threads = [threading.Thread(target=lambda: out.append(shared.once("probe", compute))) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(calls) == 1 and out[0] is out[1]
  with pytest.raises(ZeroDivisionError):
    shared.once("broken", lambda: 1 / 0)
  assert shared.once("broken", lambda: 7) == 7


class _Scripted:
  """A context whose probes score as scripted on validation: which one LP-FT keeps is a known answer."""

  def __init__(self, scores):
    self.scores, self.trained = scores, []

  def context(self):
    def finetune(model, tx=None, **kw):
      model.rate = tx
      self.trained.append((tx, kw))
      return methods.Finetuned(model, [], [], {"rule": "steps", "step": kw.get("steps")}, 0.0)

    class Model:
      pass

    return methods.Context(
      fresh=Model,
      tuned=None,
      tx=None,
      finetune=finetune,
      rate=1e-2,
      at_rate=lambda rate: rate,
      once=lambda name, compute: compute(),
      validate=lambda model: self.scores[model.rate],
    )


def test_the_probe_is_the_validation_best_of_its_grid_ties_to_the_smaller_rate():
  scripted = _Scripted({1e-3: 0.80, 1e-2: 0.91, 1e-1: 0.85})
  probe = methods.LPFT(probe_steps=500).probe(scripted.context())
  assert probe.model.rate == 1e-2 and probe.record["probe_rate"] == 1e-2 and probe.record["probe_val_in_acc"] == 0.91
  assert probe.record["probe_grid"] == [[1e-3, 0.80], [1e-2, 0.91], [1e-1, 0.85]] and probe.record["probe_steps"] == 500
  # Each probe trained the classifier only, for its own budget, with no curve.
  assert [kw for _, kw in scripted.trained] == [{"mode": "last", "steps": 500, "curve": False}] * 3
  tie = methods.LPFT(probe_steps=500).probe(_Scripted({1e-3: 0.9, 1e-2: 0.9, 1e-1: 0.5}).context())
  assert tie.record["probe_rate"] == 1e-3


@pytest.mark.parametrize(
  ("kwargs", "message"),
  [
    ({"probe_rates": [0, 1e-2]}, "probe_rates must be > 0"),
    ({"probe_rates": []}, "probe_rates is empty"),
    ({"probe_steps": 0}, "probe_steps must be an integer >= 1 or null"),
    ({"probe_steps": 2.5}, "probe_steps must be an integer >= 1 or null"),
    ({"rate_factor": 0}, "rate_factor must be > 0"),
  ],
)
def test_bad_lpft_settings_are_one_line_errors(kwargs, message):
  with pytest.raises(ValueError, match=message) as e:
    methods.LPFT(**kwargs)
  assert "\n" not in str(e.value)


def _bn_first(rngs):
  """A known-answer network: its only BatchNorm normalises the canvases themselves."""

  class BNFirst(nnx.Module):
    def __init__(self):
      self.bn = nnx.BatchNorm(1, momentum=0.9, rngs=rngs)
      self.out = nnx.Linear(1, 3, rngs=rngs)

    def __call__(self, x):
      return self.out(self.bn(x).mean(axis=(1, 2)))

  return BNFirst()


def _objects(n=40, size=8, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)
  return DeviceObjects.from_numpy(images, rng.integers(0, 3, n).astype(np.int32), 3)


def test_batchnorm_reestimation_is_the_mean_of_the_layers_inputs_over_the_batches():
  spec, objects = canvas.CanvasSpec(16, 8), _objects()
  at, key, batches = loop.Placement("fixed", (4, 4)), jax.random.key(3), 5
  model = _bn_first(nnx.Rngs(0))
  out = batchnorm.reestimate(model, objects, spec, at, batch_size=8, seed=key, batches=batches)
  inputs = []
  for i in range(batches):  # the BN layer's inputs: training's own canvases of those steps
    objs, locs, _ = step.draw_batch(jax.random.fold_in(key, i), objects.images, objects.labels, spec, at, 8)
    inputs.append(np.asarray(canvas.place(objs, locs, spec.canvas_size), np.float64))
  mean = np.mean([x.mean(axis=(0, 1, 2)) for x in inputs], axis=0)
  var = np.mean([x.var(axis=(0, 1, 2)) for x in inputs], axis=0)
  print(f"re-estimated mean - known answer: {float(np.max(np.abs(np.asarray(out.bn.mean[...]) - mean)))}")
  np.testing.assert_allclose(out.bn.mean[...], mean, rtol=1e-5)
  np.testing.assert_allclose(out.bn.var[...], var, rtol=1e-4)
  assert out.bn.momentum == 0.9 and out.bn.use_running_average  # back as it was, in eval mode
  assert np.all(np.asarray(model.bn.mean[...]) == 0)  # the model given is left alone
  assert _largest_difference(out.out, model.out) == 0.0  # params untouched


def test_batchnorm_reestimation_leaves_a_model_without_batchnorm_as_it_is():
  model = ShiftNet(num_classes=3, canvas_size=16, widths=(4,), fc_hidden=(8,), rngs=nnx.Rngs(0))
  before = _leaves(model)
  out = batchnorm.reestimate(
    model,
    _objects(),
    canvas.CanvasSpec(16, 8),
    loop.Placement("fixed", (4, 4)),
    batch_size=8,
    seed=jax.random.key(0),
    batches=3,
  )
  assert out is model and all(np.array_equal(x, y) for x, y in zip(before, _leaves(out)))


def test_wise_on_a_batchnorm_network_keeps_its_ends_and_reestimates_between_them():
  spec, objects, at = canvas.CanvasSpec(16, 8), _objects(), loop.Placement("fixed", (4, 4))
  recalibrate = lambda m: batchnorm.reestimate(m, objects, spec, at, batch_size=8, seed=jax.random.key(1), batches=2)  # noqa: E731
  ends = {
    mode: ResNet(num_classes=3, canvas_size=16, widths=(4, 8), blocks=(1, 1), rngs=nnx.Rngs(i))
    for i, mode in enumerate(("last", "full"))
  }
  nnx.update(ends["full"], jax.tree.map(lambda x: x + 0.5, nnx.state(ends["full"], nnx.BatchStat)))
  ctx = methods.Context(
    fresh=None, tuned=lambda mode: methods.copy_model(ends[mode]), tx=None, finetune=None, recalibrate=recalibrate
  )
  wise = methods.WiSEFT(alphas=[0, 0.5, 1])
  d0 = _largest_difference(wise.run(ctx, 0.0).model, ends["last"])
  d1 = _largest_difference(wise.run(ctx, 1.0).model, ends["full"])
  print(f"WiSE-FT on a BN network: alpha=0 vs last {d0}; alpha=1 vs full {d1}")
  assert d0 == 0.0 and d1 == 0.0
  half = wise.run(ctx, 0.5).model
  mixed = methods.interpolate(ends["last"], ends["full"], 0.5)
  stats = lambda m: jax.tree.leaves(nnx.state(m, nnx.BatchStat))  # noqa: E731
  assert _largest_difference(half, recalibrate(mixed)) == 0.0
  assert not np.allclose(stats(half)[0], stats(mixed)[0])  # measured, not interpolated
  params = lambda m: jax.tree.leaves(nnx.state(m, nnx.Param))  # noqa: E731
  assert all(np.array_equal(x, y) for x, y in zip(params(half), params(mixed)))


# -- comparison keys from resolved arguments ----------------------------------------------------------
def test_keys_hold_the_resolved_arguments_and_lpfts_moved_from_0_7_0s():
  s = Settings.from_config(
    _compose(["logger=none", "experiment=methods", "finetune.methods=[plain,lpft,wise,l2sp,wise_lpft]"])
  )
  lpft = {
    "_target_": "shiftbench.methods.LPFT",
    "probe_rates": [1e-3, 1e-2, 1e-1],
    "probe_steps": 8000,
    "rate_factor": 0.1,
  }
  assert s.method_configs["lpft"] == lpft
  assert s.method_configs["wise_lpft"] == {**lpft, "_target_": "shiftbench.methods.WiSELPFT"}  # no alphas
  assert s.method_configs["l2sp"] == {"_target_": "shiftbench.methods.L2SP", "classifier_ratio": 0.1}
  given = Settings.from_config(
    _compose(["logger=none", "finetune.methods=[plain,{_target_: shiftbench.methods.LPFT, probe_steps: 8000}]"])
  )
  assert given.method_configs["lpft"] == lpft  # a default given or left out: one key
  # The shipped methods rows (made by the preset): every method's key is the one its resolved entry gives,
  # and LP-FT's is not the one 0.7.0's entry (`{_target_: LPFT}`, no arguments) gave: 0.7.0's LP-FT rows never
  # share a key with these.
  with gzip.open(ROOT / "shiftbench" / "reference" / "methods.json.gz") as fh:
    shipped = json.loads(fh.read())["rows"]
  preset = Settings.from_config(_compose(["logger=none", "experiment=methods"]))
  seen = set()
  for row in shipped:
    method, plain_part = row["finetune_method"], comparison.without_method(row["comparison"])
    settings = comparison.row_settings(plain_part, None, preset.method_configs[method])
    assert comparison.key_of(settings) == row["comparison_key"], method
    if method == "lpft":
      old = comparison.row_settings(plain_part, None, {"_target_": "shiftbench.methods.LPFT"})
      assert comparison.key_of(old) != row["comparison_key"]
    seen.add(method)
  assert seen == set(preset.methods) and {"plain", "lpft", "wise", "l2sp"} <= seen


# -- through the protocol -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def protocol(tiny_data_dir, tmp_path_factory):
  """cnn_fc after translate at two rates, the groups open for the tests; of the plain rows only `last` at
  the second rate runs (what 0.7.0's LP-FT starts from): the fitted LP-FT needs none."""
  root = tmp_path_factory.mktemp("lpft_protocol")
  cfg = _compose(
    tiny_overrides(tiny_data_dir, str(root / "ckpt"))
    + ["model=cnn_fc", "pretrain.regimes=[translate]", "finetune.modes=[last,full]", "finetune.steps=8"]
    + [f"finetune.learning_rates=[{RATES[0]},{RATES[1]}]"]
  )
  s = Settings.from_config(cfg)
  p = Protocol(s, *protocol_data.load_datasets(s), root)
  source, _ = p.pretrained("cnn_fc", "translate", 0)
  (pretrained,) = plan.groups(s)
  with p.rows_of(pretrained):
    for at_rate in pretrained.rates:
      p._tuned[at_rate.key] = Shared(at_rate.key)
    last = pretrained.rates[1].plain[0]
    done = {last: p.row(last, source, None)}
    yield p, source, done


def _ctx(p, source, done, rate, method="lpft", spy=None):
  (last,) = done
  rid = last._replace(finetune="full", finetune_method=method, finetune_lr=rate)
  ctx = p.context(rid, source, done[last]["curve"][-1] if rate == last.finetune_lr else None, done)
  if spy is not None:
    ctx = dataclasses.replace(ctx, finetune=spy(ctx.finetune))
  return ctx, rid


def test_lpft_fits_its_probe_once_for_both_rates_and_starts_stage_two_from_it(protocol):
  p, source, done = protocol
  lpft, calls = methods.LPFT(**PROBE), []

  def spy(finetune):
    def run(model, **kw):
      calls.append((kw.get("mode"), methods.copy_model(model)))
      return finetune(model, **kw)

    return run

  tuned = {}
  for rate in RATES:
    ctx, _ = _ctx(p, source, done, rate, spy=spy)
    tuned[rate] = lpft.run(ctx, None)
  probes = [m for mode, m in calls if mode == "last"]
  starts = [m for mode, m in calls if mode == "full"]
  assert len(probes) == len(PROBE["probe_rates"]) and len(starts) == 2  # the probe once, stage 2 per rate
  probe = lpft.probe(_ctx(p, source, done, RATES[0])[0])
  assert probe is lpft.probe(_ctx(p, source, done, RATES[1])[0])
  d = max(_largest_difference(start, probe.model) for start in starts)
  print(f"LP-FT stage 2 start vs the fitted probe (both rates): {d}")
  assert d == 0.0
  assert _largest_difference(probe.model, p.start(next(iter(done)), source)) > 0  # the probe trained
  record = tuned[RATES[0]].stop["lpft"]
  assert record["probe_rate"] == max(record["probe_grid"], key=lambda x: x[1])[0] and record["probe_steps"] == 6
  assert [r["lpft"]["rate"] for r in (tuned[x].stop for x in RATES)] == [0.1 * x for x in RATES]
  # Step 0 of its curve is the probe, measured: not the plain `last` row's point.
  point = p.location_map(p.predictor(probe.model), p.curve_b)
  assert tuned[RATES[0]].curve[0]["in_acc"] == point["in_acc"] and "from" not in tuned[RATES[0]].curve[0]
  assert tuned[RATES[0]].curve[0]["in_acc"] == tuned[RATES[1]].curve[0]["in_acc"]


def test_lpft_stage_two_runs_at_rate_factor_times_the_rate(protocol):
  """Adam's first step moves every weight whose gradient is far above its epsilon by the rate: the largest
  move of one stage-2 step is the rate stage 2 runs at (known answer)."""
  p, source, done = protocol
  factor, rate = 0.25, RATES[1]

  def one_step(finetune):
    return lambda model, **kw: finetune(model, **{**kw, "steps": 1} if kw.get("mode") == "full" else kw)

  ctx, _ = _ctx(p, source, done, rate, spy=one_step)
  lpft = methods.LPFT(**PROBE, rate_factor=factor)
  moved = _largest_difference(lpft.run(ctx, None).model, lpft.probe(ctx).model)
  print(f"LP-FT one stage-2 step: largest move {moved}, rate x factor {rate * factor}")
  assert moved == pytest.approx(rate * factor, rel=1e-3)


def test_lpft_at_its_0_7_0_setting_is_0_7_0s_lpft(protocol):
  p, source, done = protocol
  ctx, _ = _ctx(p, source, done, RATES[1])
  old = ctx.finetune(ctx.tuned("last"), mode="full", probe=True)  # 0.7.0's LPFT.run, as it was
  new = methods.LPFT(probe_steps=None, rate_factor=1).run(ctx, None)
  d = _largest_difference(new.model, old.model)
  print(f"LP-FT (probe_steps=null, rate_factor=1) vs 0.7.0's LP-FT: {d}")
  assert d == 0.0 and json.dumps(new.curve) == json.dumps(old.curve) and new.curve[0].get("from") == "probe"
  assert {k: new.stop[k] for k in old.stop} == old.stop and new.stop["lpft"] == {
    "probe": "plain last row",
    "rate": RATES[1],
  }
  assert methods.LPFT(probe_steps=None).needs == ("last",) and methods.LPFT().needs == ()


def test_wise_along_probe_to_lpft_is_the_probe_and_the_lpft_model_at_its_ends(protocol):
  p, source, done = protocol
  lpft = methods.LPFT(**PROBE)
  wise = methods.WiSELPFT(alphas=[0, 0.5, 1], **PROBE)
  ctx, _ = _ctx(p, source, done, RATES[0], method="wise_lpft")
  probe, tuned = lpft.probe(ctx).model, lpft.run(ctx, None).model  # LP-FT's row of these settings
  trained = []
  count = dataclasses.replace(ctx, finetune=lambda m, **kw: trained.append(kw) or ctx.finetune(m, **kw))
  ends = {a: wise.run(count, a) for a in (0.0, 0.5, 1.0)}
  assert trained == []  # it reads LP-FT's probe and stage 2: nothing trains again
  d0 = _largest_difference(ends[0.0].model, probe)
  d1 = _largest_difference(ends[1.0].model, tuned)
  print(f"WiSE-FT (probe -> LP-FT) alpha=0 vs probe: {d0}; alpha=1 vs LP-FT: {d1}")
  assert d0 == 0.0 and d1 == 0.0 and _largest_difference(ends[0.0].model, ends[1.0].model) > 0
  assert ends[0.5].stop["rule"] == "interpolated" and ends[0.5].stop["lpft"]["probe_steps"] == 6


def test_lpft_refuses_a_run_without_validation_objects():
  scripted = _Scripted({1e-3: None})
  with pytest.raises(ValueError, match="set eval.validation_fraction > 0"):
    methods.LPFT(probe_rates=[1e-3], probe_steps=5).probe(scripted.context())


def test_lpft_needs_no_plain_rows_but_its_0_7_0_setting_does():
  Settings.from_config(_compose(["logger=none", "model=cnn_fc", "finetune.modes=[full]", "finetune.methods=[lpft]"]))
  with pytest.raises(ConfigError, match="add plain to finetune.methods"):
    Settings.from_config(
      _compose(["logger=none", "finetune.methods=[{_target_: shiftbench.methods.LPFT, probe_steps: null}]"])
    )
