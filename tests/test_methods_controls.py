"""The controls among the fine-tuning methods (issue 32): replay, EWC, surgical fine-tuning and the uniform
soup, each with its known-answer identity through the protocol's own bookkeeping (each prints the largest
difference it saw):
  replay at rho = 0 and EWC at lambda = 0 are plain `full` fine-tuning, to the bit (model and curve);
  surgical fine-tuning leaves the hidden FC layers exactly as pretrained, and on a model without hidden FC
    layers it is plain `full`, to the bit;
  a soup of one model is that model, row numbers and all; a soup of two is their mean.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_overrides
from flax import nnx
from hydra import compose, initialize_config_dir
from test_schema import ROOT

from shiftbench import methods, models
from shiftbench.data import canvas
from shiftbench.rows import schema
from shiftbench.runs import plan, protocol_data
from shiftbench.runs.experiment import run_experiment
from shiftbench.runs.protocol import Protocol
from shiftbench.runs.settings import Settings
from shiftbench.training import loop
from shiftbench.training import replay as replays


def _compose(overrides):
  with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
    return compose("config", overrides=overrides)


def _leaves(model, which=...):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, which))]


def _largest_difference(a, b, which=...) -> float:
  la, lb = _leaves(a, which), _leaves(b, which)
  assert len(la) == len(lb) and la and all(x.shape == y.shape for x, y in zip(la, lb))
  return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0)) for x, y in zip(la, lb))


METHODS = "finetune.methods=[plain,replay,ewc,surgical,soup]"


def test_the_controls_are_selectable_and_the_soup_runs_after_every_rate():
  s = Settings.from_config(
    _compose(
      ["logger=none", "model=cnn_fc", "finetune.learning_rates=[1e-3,1e-2]", "finetune.modes=[last,full]", METHODS]
    )
  )
  _, translate = [g for g in plan.groups(s) if g.seed == 0]
  low, high = translate.rates
  controls = [f"replay{r:g}" for r in (0.125, 0.25, 0.5)] + [f"ewc{x:g}" for x in (1, 10, 100)] + ["surgical"]
  assert [r.method_label for r in low.rows] == ["plain", "plain", *controls]
  # Every rate's soup row runs in the last rate's group, after both rates' plain rows.
  assert [(r.method_label, r.finetune_lr) for r in high.rows][-2:] == [("soup", 1e-3), ("soup", 1e-2)]
  assert {r.finetune for r in translate.rows if r.finetune_method != schema.PLAIN} == {"full"}


def test_replay_and_ewc_are_refused_after_imagenet_weights_before_anything_trains():
  import types

  from shiftbench.infra.errors import ConfigError

  for name in ("replay", "ewc"):
    s = types.SimpleNamespace(
      seeds=(0,),
      models={"resnet18_tv": None},
      pretrain_regimes=("imagenet",),
      finetune_modes=("full",),
      scratch_modes=("full",),
      finetune_rates=(1e-3,),
      arms={},
      methods={"plain": methods.Plain(), name: methods.BUILTIN[name]()},
    )
    with pytest.raises(ConfigError, match=f"method '{name}' keeps what pretraining on A taught"):
      plan.check_method_needs(s)
  plan.check_method_needs(types.SimpleNamespace(**{**vars(s), "pretrain_regimes": ("translate",)}))


# -- the parts, on their own --------------------------------------------------------------------------
def test_a_soup_of_one_is_that_model_and_of_two_their_mean():
  a = models.ResNet(num_classes=3, canvas_size=16, widths=(4, 8), blocks=(1, 1), rngs=nnx.Rngs(0))
  b = models.ResNet(num_classes=3, canvas_size=16, widths=(4, 8), blocks=(1, 1), rngs=nnx.Rngs(1))
  nnx.update(b, jax.tree.map(lambda x: x + 0.5, nnx.state(b, nnx.BatchStat)))
  assert _largest_difference(methods.uniform_soup([a]), a) == 0.0
  for x, y, z in zip(_leaves(a), _leaves(b), _leaves(methods.uniform_soup([a, b]))):
    np.testing.assert_allclose(z, (x + y) / 2, rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match="needs one or more models"):
    methods.uniform_soup([])


def test_the_ewc_penalty_adds_lambda_f_times_the_pull_home_and_spares_the_classifier():
  model = models.ShiftNet(num_classes=3, canvas_size=16, widths=(4,), fc_hidden=(8,), rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  paths = {jax.tree_util.keystr(p): w for p, w in jax.tree_util.tree_flatten_with_path(params)[0]}
  fisher = {k: jnp.full_like(w, 0.25) for k, w in paths.items() if "classifier" not in k}
  tx = methods.EWC(lambdas=[4.0]).transform(optax_identity(), 4.0, fisher)
  state = tx.init(params)
  moved = jax.tree.map(lambda w: w + 2.0, params)
  out, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, moved)
  for path, g in jax.tree_util.tree_flatten_with_path(out)[0]:
    want = 1.0 if "classifier" in jax.tree_util.keystr(path) else 1.0 + 4.0 * 0.25 * 2.0
    np.testing.assert_allclose(g, np.broadcast_to(want, g.shape), rtol=1e-6)
  assert methods.EWC().transform(tx, 0.0, fisher) is tx  # lambda = 0: the optimiser itself


def optax_identity():
  import optax

  return optax.identity()


def test_replay_keeps_plain_batches_b_objects_and_draws_a_at_the_pretraining_placement():
  """The B part of a replay batch is the first objects of plain fine-tuning's own draw (same key): a
  model that reads only the objects' labels back shows which objects each step saw."""
  spec = canvas.CanvasSpec(canvas_size=12, object_size=4)
  b_images = jnp.arange(10, dtype=jnp.uint8)[:, None, None, None] * jnp.ones((1, 4, 4, 1), jnp.uint8)
  at_b, at_a = loop.Placement("fixed", (0, 0)), loop.Placement("translate", (0, 0))
  key = jax.random.key(3)
  k_idx, _ = jax.random.split(key)
  plain_idx = np.asarray(jax.random.randint(k_idx, (8,), 0, 10))
  seen = {}

  class Reader(nnx.Module):  # logits = the object's grey level (B's) then its position (A's)
    def __init__(self):
      self.w = nnx.Param(jnp.zeros(()))
      self.head = nnx.Module()
      b, a = nnx.Linear(1, 1, rngs=nnx.Rngs(0)), nnx.Linear(1, 1, rngs=nnx.Rngs(1))
      self.head.classifier = replays.PairedClassifier(b, a)

    def __call__(self, x):
      seen["canvases"] = x
      grey = x.max(axis=(1, 2, 3))[:, None]
      return self.head.classifier(grey * 255.0) * 0.0 + self.w

  model = Reader()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  import optax

  step = replays.make_step(graphdef, optax.sgd(0.0).update, spec, at_b, 8, replays.Replay(0.25, at_a), 1)
  tx = optax.sgd(0.0)
  labels = jnp.zeros(10, jnp.int32)
  step(params, tx.init(params), rest, key, b_images, labels, b_images + 100, labels)
  canvases = np.asarray(seen["canvases"])
  greys = canvases.max(axis=(1, 2, 3)) * 255.0
  np.testing.assert_allclose(greys[:6], plain_idx[:6], atol=1e-4)  # B: plain's first 6 of 8
  assert (greys[6:] >= 100).all()  # A: 2 of 8 (0.25), A's objects
  b_where = [np.argwhere(c.max(axis=-1) > 0) for c in canvases[:6] if c.max() > 0]
  assert all(w.min(axis=0).tolist() == [0, 0] for w in b_where)  # B at its fixed location
  with pytest.raises(ValueError, match="replay fraction 0.01 of a batch of 8 is 0 objects"):
    replays.Replay(0.01, at_a).count(8)


# -- the identities, through the protocol -------------------------------------------------------------
def _protocol(tiny_data_dir, root, model, rates="[1e-2]", modes="[last,head,full]"):
  cfg = _compose(
    tiny_overrides(tiny_data_dir, str(root / "ckpt"))
    + [f"model={model}", "pretrain.regimes=[translate]", f"finetune.modes={modes}", "finetune.steps=8"]
    + [f"finetune.learning_rates={rates}", METHODS]
  )
  s = Settings.from_config(cfg)
  return Protocol(s, *protocol_data.load_datasets(s), root)


@pytest.fixture(scope="module")
def run_rows(tiny_data_dir, tmp_path_factory):
  """Runs a protocol's plain rows of one pretrained model at every rate (the groups open as a run opens
  them) and yields (protocol, source, rows done, the open groups); the method rows are the tests'."""

  def runner(model, rates="[1e-2]"):
    p = _protocol(tiny_data_dir, tmp_path_factory.mktemp(f"controls_{model}"), model, rates)
    source, _ = p.pretrained(model, "translate", 0)
    (group,) = plan.groups(p.s)
    done = {}
    p.open_group(group)
    for at_rate in group.rates:
      with p.rows_at(at_rate):
        for rid in at_rate.plain:
          point = done[rid.plain_sibling("last")]["curve"][-1] if rid.finetune != "last" else None
          done[rid] = p.row(rid, source, None, point, done)
    return p, source, done, group

  return runner


def _context(p, rid, source, done):
  return p.context(rid, source, done[rid.plain_sibling("last")]["curve"][-1], done)


@pytest.fixture(scope="module")
def cnn_fc(run_rows):
  p, source, done, group = run_rows("cnn_fc")
  (at_rate,) = group.rates
  with p.rows_at(at_rate):  # reopened: the plain models kept while the method rows run
    for rid in at_rate.plain:
      p._keep(rid, p._before[group.key][rid])
    yield p, source, done, at_rate


def _kept(p, rid):
  """The plain row's fine-tuned model its open rate group keeps."""
  return p._tuned[plan.rate_key(rid)][rid]


def _full(at_rate):
  (full,) = [r for r in at_rate.plain if r.finetune == "full"]
  return full


def test_replay_at_zero_is_exactly_plain_full_and_replaying_a_trains_b_model(cnn_fc):
  p, source, done, at_rate = cnn_fc
  full = _full(at_rate)
  rid = full._replace(finetune_method="replay", method_setting=0.0)
  ctx = _context(p, rid, source, done)
  zero = methods.Replay(rhos=[0.0, 0.5]).run(ctx, 0.0)
  d = _largest_difference(zero.model, _kept(p, full))
  print(f"replay rho=0 vs plain full: {d}")
  assert d == 0.0 and json.dumps(zero.curve) == json.dumps(done[full]["curve"])
  half = methods.Replay(rhos=[0.5]).run(ctx, 0.5)
  assert _largest_difference(half.model, _kept(p, full)) > 0  # it replayed: another model
  assert _leaves(half.model)[0].shape == _leaves(_kept(p, full))[0].shape  # B's model, A's classifier gone
  assert not isinstance(half.model.head.classifier, replays.PairedClassifier)
  assert half.curve[-1]["in_acc"] >= 0 and half.stop["step"] == 8


def test_ewc_at_zero_is_exactly_plain_full_and_a_large_lambda_stays_near_pretrained(cnn_fc):
  p, source, done, at_rate = cnn_fc
  full = _full(at_rate)
  rid = full._replace(finetune_method="ewc", method_setting=0.0)
  ctx = _context(p, rid, source, done)
  method = methods.EWC(lambdas=[0.0, 1e6], fisher_samples=64)
  zero = method.run(ctx, 0.0)
  d = _largest_difference(zero.model, _kept(p, full))
  print(f"EWC lambda=0 vs plain full: {d}")
  assert d == 0.0 and json.dumps(zero.curve) == json.dumps(done[full]["curve"])
  fisher = methods.fisher_diagonal(ctx.pretraining, 64)
  transferred = nnx.state(p.start(full, source), nnx.All(nnx.Param, models.TRANSFERABLE))
  names = {jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(transferred)[0]}
  assert set(fisher) == names  # every transferred weight, by its path; B's classifier has none
  assert all(bool(jnp.all(f >= 0)) for f in fisher.values()) and not any("classifier" in k for k in fisher)
  # F-weighted distance from the pretrained weights: a large lambda keeps it well below plain full's.
  home = lambda m: sum(  # noqa: E731
    float(jnp.sum(fisher[jax.tree_util.keystr(path)] * (w - w0) ** 2))
    for (path, w), w0 in zip(
      jax.tree_util.tree_flatten_with_path(nnx.state(m, nnx.All(nnx.Param, models.TRANSFERABLE)))[0],
      jax.tree.leaves(transferred),
    )
  )
  assert home(method.run(ctx, 1e6).model) < 0.5 * home(_kept(p, full))


def test_surgical_leaves_the_hidden_fc_layers_as_pretrained_and_trains_the_rest(cnn_fc):
  p, source, done, at_rate = cnn_fc
  full = _full(at_rate)
  ctx = _context(p, full._replace(finetune_method="surgical"), source, done)
  tuned = methods.Surgical().run(ctx, None)
  hidden = nnx.All(nnx.Param, models.HIDDEN)
  d = _largest_difference(tuned.model, source, hidden)
  print(f"surgical hidden FC layers vs pretrained: {d}")
  assert d == 0.0
  start = p.start(full, source)
  assert _largest_difference(tuned.model, start, nnx.All(nnx.Param, nnx.Not(models.HEAD))) > 0  # convs trained
  assert _largest_difference(tuned.model, start, nnx.All(nnx.Param, models.CLASSIFIER)) > 0


def test_surgical_on_a_model_without_hidden_fc_layers_is_plain_full(run_rows):
  p, source, done, group = run_rows("gap")
  (at_rate,) = group.rates
  full = _full(at_rate)
  assert not jax.tree.leaves(nnx.state(source, nnx.All(nnx.Param, models.HIDDEN)))  # gap has none
  with p.rows_at(at_rate):
    tuned = methods.Surgical().run(_context(p, full._replace(finetune_method="surgical"), source, done), None)
  d = _largest_difference(tuned.model, p._before[group.key][full])
  print(f"surgical (no hidden FC layers) vs plain full: {d}")
  assert d == 0.0 and json.dumps(tuned.curve) == json.dumps(done[full]["curve"])


def test_a_soup_of_one_rate_is_that_rows_model_and_numbers(cnn_fc):
  p, source, done, at_rate = cnn_fc
  full = _full(at_rate)
  soup = full._replace(finetune_method="soup")
  row = p.row(soup, source, None, done[full.plain_sibling("last")]["curve"][-1], done)
  model = methods.Soup().run(_context(p, soup, source, done), None).model
  d = _largest_difference(model, _kept(p, full))
  print(f"soup of one rate vs plain full: {d}")
  assert d == 0.0
  as_json = lambda v: json.dumps(v, default=lambda x: np.asarray(x).tolist())  # noqa: E731
  # Every metric of the row (what only a trained row has aside: its curve, steps and seconds).
  trained_only = {"finetune_steps", "finetune_seconds", "eval_seconds", "pretrain_invariance_lost"}
  metrics = {
    k: v for k, v in schema.scalar_metrics(done[full]).items() if k not in trained_only and not k.startswith("train_")
  }
  assert len(metrics) > 10 and {k: schema.scalar_metrics(row)[k] for k in metrics} == metrics
  assert as_json(row["location_map"]) == as_json(done[full]["location_map"])
  assert row["finetune_stop"] == {"rule": "soup", "step": 0, "rates": [0.01]} and row["curve"] == []


def test_a_soup_of_two_rates_averages_their_full_models_kept_or_trained_again(run_rows):
  p, source, done, group = run_rows("cnn_fc", "[1e-3,1e-2]")
  low, high = group.rates
  fulls = [_full(a) for a in group.rates]
  kept = [p._before[group.key][f] for f in fulls]  # kept beyond their rate's group, for the soup
  with p.rows_at(high):
    soup_rid = fulls[0]._replace(finetune_method="soup")
    ctx = _context(p, soup_rid, source, done)
    soup = methods.Soup().run(ctx, None).model
    for x, y, z in zip(_leaves(kept[0]), _leaves(kept[1]), _leaves(soup)):
      np.testing.assert_allclose(z, (x + y) / 2, rtol=1e-6, atol=1e-7)
    del p._before[group.key][fulls[0]]  # as in a resumed run: trained again, the same model
    again = ctx.tuned_at("full", 1e-3)
    assert _largest_difference(again, kept[0]) == 0.0
  p.close_group(group)


# -- end to end ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_controls_run_as_rows_and_their_identities_hold_in_rows(tiny_data_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("controls_run")
  replay = "{_target_: shiftbench.methods.Replay, rhos: [0, 0.25]}"
  ewc = "{_target_: shiftbench.methods.EWC, lambdas: [0, 100], fisher_samples: 64}"
  entries = f"[plain,{replay},{ewc},surgical,soup]"
  cfg = _compose(
    tiny_overrides(tiny_data_dir, str(root / "ckpt"))
    + ["model=cnn_fc", "pretrain.regimes=[translate]", "finetune.modes=[last,full]", "finetune.steps=8"]
    + ["finetune.learning_rates=[1e-3,1e-2]", f"finetune.methods={entries}"]
  )
  run_experiment(cfg, root / "run")
  rows = json.loads((root / "run" / "results.json").read_text())["rows"]
  by = {(schema.identity(r).method_label, r["finetune"], r["finetune_lr"]): r for r in rows}
  labels = ["replay0", "replay0.25", "ewc0", "ewc100", "surgical", "soup"]
  want = [("plain", "last", lr) for lr in (1e-3, 1e-2)]
  want += [(m, "full", lr) for m in ["plain", *labels] for lr in (1e-3, 1e-2)]
  assert sorted(by) == sorted(want)
  for lr in (1e-3, 1e-2):
    full = by["plain", "full", lr]
    for same in ("replay0", "ewc0"):
      assert by[same, "full", lr]["location_map"]["acc"] == full["location_map"]["acc"], same
      assert by[same, "full", lr]["curve"] == full["curve"], same
  # The soup's rows are one model: the same numbers at both rates.
  assert by["soup", "full", 1e-3]["location_map"] == by["soup", "full", 1e-2]["location_map"]
  described = json.loads((root / "run" / "results.json").read_text())["methods"]
  assert described["ewc"]["setting_symbol"] == "λ" and described["replay"]["setting_name"] == "rho"
