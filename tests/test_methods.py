"""Fine-tuning methods (shiftbench/methods/): the known-answer identities through the protocol's own
bookkeeping, the config door, and methods defined outside the package run end to end (one with a grid,
registered as the built-ins are, in the rows, the boards, the figures and the terminal).

The identities (kept in CI; each prints the largest difference it saw):
  WiSE-FT at alpha = 0 is the `last` row's model and at alpha = 1 the `full` row's, exactly;
  L2-SP at beta = 0 is plain `full` fine-tuning, exactly;
  LP-FT at its 0.7.0 setting starts from the `last` row's model (its trained classifier), which it leaves
  intact (the fitted probe's identities: tests/test_lpft.py).
"""

import dataclasses
import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_overrides
from flax import nnx
from hydra import compose, initialize_config_dir
from test_schema import ROOT

from shiftbench import methods, models
from shiftbench.infra.errors import ConfigError
from shiftbench.models import ResNet, ShiftNet
from shiftbench.reporting import leaderboard, pareto, terminal
from shiftbench.rows import collect, schema
from shiftbench.runs import plan
from shiftbench.runs.experiment import run_experiment
from shiftbench.runs.settings import Settings


def _compose(overrides):
  with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
    return compose("config", overrides=overrides)


def _leaves(model: nnx.Module) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]


def _largest_difference(a: nnx.Module, b: nnx.Module) -> float:
  la, lb = _leaves(a), _leaves(b)
  assert len(la) == len(lb) and all(x.shape == y.shape for x, y in zip(la, lb))
  return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0)) for x, y in zip(la, lb))


# -- the parts, on their own --------------------------------------------------------------------------
def test_interpolation_is_exact_at_its_ends_and_mixes_batchnorm_statistics():
  a = ResNet(num_classes=3, canvas_size=16, widths=(4, 8), blocks=(1, 1), rngs=nnx.Rngs(0))
  b = ResNet(num_classes=3, canvas_size=16, widths=(4, 8), blocks=(1, 1), rngs=nnx.Rngs(1))
  stats = lambda m: jax.tree.leaves(nnx.state(m, nnx.BatchStat))  # noqa: E731
  nnx.update(b, jax.tree.map(lambda x: x + 0.5, nnx.state(b, nnx.BatchStat)))  # running statistics that differ
  assert _largest_difference(methods.interpolate(a, b, 0.0), a) == 0.0
  assert _largest_difference(methods.interpolate(a, b, 1.0), b) == 0.0
  half = methods.interpolate(a, b, 0.5)
  for x, y, z in zip(_leaves(a), _leaves(b), _leaves(half)):
    np.testing.assert_allclose(z, (x + y) / 2, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(stats(half)[0], (stats(a)[0] + stats(b)[0]) / 2, rtol=1e-6)


def test_the_l2sp_penalty_pulls_transferred_weights_home_and_decays_the_classifier():
  model = ShiftNet(num_classes=3, canvas_size=16, widths=(4,), fc_hidden=(8,), rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  tx = methods.l2sp_penalty(0.5, 0.25)
  state = tx.init(params)
  moved = jax.tree.map(lambda w: w + 2.0, params)
  grads = jax.tree.map(jnp.ones_like, params)
  out, _ = tx.update(grads, state, moved)
  for path, g in jax.tree_util.tree_flatten_with_path(out)[0]:
    name = jax.tree_util.keystr(path)
    w = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(moved)[0]}[name]
    want = 1 + 2 * 0.25 * w if "classifier" in name else 1 + 2 * 0.5 * 2.0  # grad + d/dw of the penalty
    np.testing.assert_allclose(g, np.broadcast_to(want, g.shape), rtol=1e-6)
  zero, _ = methods.l2sp_penalty(0.0, 0.0).update(grads, state, moved)
  assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(zero), jax.tree.leaves(grads)))


# -- the config door ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
  ("methods_value", "message"),
  [
    ("[plain,sgd]", "unknown fine-tune method 'sgd'"),
    ("[plain,lpft,lpft]", "the method 'lpft' twice"),
    ("[wise]", "add plain to finetune.methods"),
    ("[]", "finetune.methods is empty"),
    ("[plain,{_target_: shiftbench.methods.WiSEFT, alphas: [0, 1.5]}]", "must lie in [0, 1], got [1.5]"),
    ("[plain,{_target_: shiftbench.methods.Replay, rhos: [0.5, 1]}]", "must be below 1"),
    ("[plain,{_target_: shiftbench.methods.EWC, lambdas: [-1]}]", "must lie in >= 0, got [-1.0]"),
    ("[plain,{_target_: shiftbench.methods.EWC, fisher_samples: 0}]", "fisher_samples must be an integer >= 1, got 0"),
  ],
)
def test_bad_methods_are_one_line_errors(methods_value, message):
  with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
    Settings.from_config(_compose(["logger=none", f"finetune.methods={methods_value}"]))
  assert "\n" not in str(e.value)


def test_a_method_whose_plain_rows_do_not_run_is_refused_before_anything_trains():
  with pytest.raises(ConfigError, match="starts from the plain last rows of cnn_fc after translate"):
    Settings.from_config(
      _compose(["logger=none", "model=cnn_fc", "finetune.modes=[head,full]", "finetune.methods=[plain,wise]"])
    )
  with pytest.raises(ConfigError, match=r"finetune.methods \['lpft'\] have no rows"):  # no full fine-tuning
    Settings.from_config(
      _compose(["logger=none", "model=cnn_fc", "finetune.modes=[last,head]", "finetune.methods=[plain,lpft]"])
    )


def test_method_rows_follow_the_plain_rows_they_start_from_at_every_rate():
  s = Settings.from_config(
    _compose(
      ["logger=none", "model=cnn_fc", "finetune.learning_rates=[1e-3,1e-2]", "finetune.modes=[last,full]"]
      + ["finetune.methods=[plain,lpft,{_target_: shiftbench.methods.WiSEFT, alphas: [0.5]},l2sp]"]
    )
  )
  scratch, translate = [g for g in plan.groups(s) if g.seed == 0]
  labels = [(r.finetune, r.method_label, r.finetune_lr) for r in translate.rows]
  per_rate = [("last", "plain"), ("full", "plain"), ("full", "lpft"), ("full", "wise0.5")]
  per_rate += [("full", f"l2sp{b:g}") for b in (0.001, 0.01, 0.1, 1.0)]
  assert labels == [(*x, lr) for lr in (1e-3, 1e-2) for x in per_rate]
  assert [r.method_label for r in scratch.rows] == ["plain", "plain"]  # nothing to keep
  # Plain rows' settings stay those of a run without methods; L2-SP's own (its ratio) enter its key only.
  l2sp = {"_target_": "shiftbench.methods.L2SP", "classifier_ratio": 0.1}  # its default, resolved
  assert s.method_configs["plain"] == {} and s.method_configs["l2sp"] == l2sp


# -- the identities, through the protocol's context ---------------------------------------------------
@pytest.fixture
def protocol(methods_protocol):
  return methods_protocol


def _kept(p, rid):
  """The fine-tuned model plain row `rid` left for the method rows of its rate."""
  return p._tuned[plan.rate_key(rid)][rid]


def _ids(p):
  last, full = plan.groups(p.s)[0].rows
  return last, full


def test_wise_at_zero_and_one_is_exactly_the_last_and_full_rows(protocol):
  p, source, done = protocol
  last, full = _ids(p)
  wise = full._replace(finetune_method="wise")
  ctx = p.context(wise, source, None, done)
  ends = {a: methods.WiSEFT(alphas=[0.0, 1.0]).run(ctx, a).model for a in (0.0, 1.0)}
  d0, d1 = _largest_difference(ends[0.0], _kept(p, last)), _largest_difference(ends[1.0], _kept(p, full))
  print(f"WiSE-FT alpha=0 vs last: {d0}; alpha=1 vs full: {d1}")
  assert d0 == 0.0 and d1 == 0.0
  assert _largest_difference(_kept(p, last), _kept(p, full)) > 0  # the two ends differ: a real check


def test_l2sp_at_zero_is_exactly_plain_full_and_a_larger_beta_stays_closer_to_pretrained(protocol):
  p, source, done = protocol
  _, full = _ids(p)
  rid = full._replace(finetune_method="l2sp", method_setting=0.0)
  ctx = p.context(rid, source, done[full.plain_sibling("last")]["curve"][-1], done)
  method = methods.L2SP(betas=[0.0, 30.0])
  zero = method.run(ctx, 0.0)
  d = _largest_difference(zero.model, _kept(p, full))
  print(f"L2-SP beta=0 vs plain full: {d}")
  assert d == 0.0 and json.dumps(zero.curve) == json.dumps(done[full]["curve"])
  transferred = lambda m: jax.tree.leaves(nnx.state(m, nnx.All(nnx.Param, models.TRANSFERABLE)))  # noqa: E731
  pretrained = transferred(p.start(full, source))
  distance = lambda m: sum(float(jnp.sum((x - y) ** 2)) for x, y in zip(transferred(m), pretrained))  # noqa: E731
  assert distance(method.run(ctx, 30.0).model) < 0.5 * distance(_kept(p, full))


def test_lpft_at_its_0_7_0_setting_starts_from_the_last_rows_model_and_leaves_it_intact(protocol):
  p, source, done = protocol
  last, full = _ids(p)
  before = _leaves(_kept(p, last))
  ctx = p.context(full._replace(finetune_method="lpft"), source, done[last]["curve"][-1], done)
  seen = {}

  def spy(model, **kw):
    seen["start"], seen["kw"] = methods.copy_model(model), kw
    return ctx.finetune(model, **kw)

  tuned = methods.LPFT(probe_steps=None, rate_factor=1).run(dataclasses.replace(ctx, finetune=spy), None)
  d = _largest_difference(seen["start"], _kept(p, last))
  print(f"LP-FT start vs last: {d}")
  assert d == 0.0 and seen["kw"] == {"tx": ctx.tx, "mode": "full", "probe": True}
  assert _largest_difference(tuned.model, seen["start"]) > 0  # it trained (everything, from the probe)
  assert all(np.array_equal(x, y) for x, y in zip(before, _leaves(_kept(p, last))))
  # Its classifier is not the fresh one plain full starts from.
  fresh = p.start(full, source)
  classifier = lambda m: jax.tree.leaves(nnx.state(m.head.classifier))  # noqa: E731
  assert not np.array_equal(classifier(seen["start"])[-1], classifier(fresh)[-1])


def test_a_resumed_run_trains_the_plain_models_again_to_the_same_numbers(protocol):
  p, source, done = protocol
  last, full = _ids(p)
  kept = {r: p._tuned[plan.rate_key(r)].pop(r) for r in (last, full)}  # as if the rows came from results.json
  again = p.tuned(last, source, done)
  assert _largest_difference(again, kept[last]) == 0.0
  assert _largest_difference(p.tuned(full, source, done), kept[full]) == 0.0
  with pytest.raises(ValueError, match="does not run in this experiment"):
    p.tuned(last._replace(finetune="head"), source, done)


def test_a_row_of_another_group_gets_nothing_the_open_group_keeps(protocol):
  """What rows share lives as long as their plan group runs: a row of another rate, seed or model asking
  for it is a bug, not a silent reuse."""
  p, source, done = protocol
  last, _ = _ids(p)
  with pytest.raises(RuntimeError, match=r"asked for while the groups \[\('cnn_fc', 'translate', 0.01, 0\)\] run"):
    p.tuned(last._replace(finetune_lr=0.5), source, done)
  with pytest.raises(RuntimeError, match="shift metrics before fine-tuning of .* asked for while the groups"):
    p.before(last._replace(seed=1), lambda: None)


# -- end to end, with a method from outside the package -----------------------------------------------
def _docs_example() -> str:
  """The example method of docs/development.md, so the docs' code is what this test runs."""
  text = (ROOT / "docs" / "development.md").read_text()
  section = text[text.index("## Add a fine-tune method") :]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


LAST_AGAIN = '''

class LastAgain(Method):
  """A bare model back: the `last` row's, evaluated again (an identity through the protocol)."""

  name, needs = "last_again", ("last",)

  def run(self, ctx, setting):
    return ctx.tuned("last")
'''


@pytest.fixture(scope="module")
def methods_run(tiny_data_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("methods_run")
  (root / "my_methods.py").write_text(_docs_example() + LAST_AGAIN)
  sys.path.insert(0, str(root))
  try:
    import my_methods

    # A gridded method from outside the package, named in the config as a built-in is: registered.
    methods.register(my_methods.TemperedProbe)
    entries = [
      "plain",
      "{_target_: shiftbench.methods.LPFT, probe_rates: [1e-2], probe_steps: 4}",  # a tiny probe
      "{_target_: shiftbench.methods.WiSEFT, alphas: [0, 0.5, 1]}",
      "{_target_: shiftbench.methods.L2SP, betas: [0, 0.1]}",
      "{_target_: my_methods.zero_head, _partial_: true}",
      "tempered_probe",
      "{_target_: my_methods.LastAgain}",
    ]
    cfg = _compose(
      tiny_overrides(tiny_data_dir, str(root / "ckpt"))
      + ["model=cnn_fc", "pretrain.regimes=[translate]", "finetune.modes=[last,full]", "finetune.steps=8"]
      + [f"finetune.methods=[{','.join(entries)}]"]
    )
    with pytest.raises(ConfigError, match="neither a method name nor"):
      Settings.from_config(_compose(["logger=none", "finetune.methods=[plain,{alphas: [0]}]"]))
    run_experiment(cfg, root / "run")
  finally:
    methods.BUILTIN.pop("tempered_probe", None)
    sys.modules.pop("my_methods", None)
    sys.path.remove(str(root))
  return root / "run"


def _row(rows, label, finetune="full"):
  (found,) = [r for r in rows if (r["finetune"], schema.identity(r).method_label) == (finetune, label)]
  return found


EVALUATED = ("in_acc", "off_acc", "val_in_acc", "consistency", "worst_case_acc", "flip_rate")


@pytest.mark.slow
def test_every_method_is_a_row_with_its_identity_and_the_identities_hold_in_rows(methods_run):
  rows = json.loads((methods_run / "results.json").read_text())["rows"]
  labels = [schema.identity(r).method_label for r in rows]
  assert labels == [
    "plain",
    "plain",
    "lpft",
    "wise0",
    "wise0.5",
    "wise1",
    "l2sp0",
    "l2sp0.1",
    "zero_head",
    "tempered_probe0.5",
    "tempered_probe2",
    "last_again",
  ]
  assert len({schema.unique(r) for r in rows}) == len(rows)
  last, full = _row(rows, "plain", "last"), _row(rows, "plain")
  same_as = [("wise0", last), ("wise1", full), ("l2sp0", full), ("last_again", last)]
  for same, as_ in same_as + [("tempered_probe0.5", last), ("tempered_probe2", last)]:
    row = _row(rows, same)
    assert row["location_map"]["acc"] == as_["location_map"]["acc"], same
    assert all(row[k] == as_[k] for k in EVALUATED if k in as_ and as_[k] is not None), same
  # What each method's row records: its own settings in its key, never in the protocol's.
  assert len({r["protocol_key"] for r in rows}) == 1
  assert not any(k.startswith("method.") for k in full["comparison"])
  assert _row(rows, "l2sp0")["comparison"]["method._target_"] == "shiftbench.methods.L2SP"
  assert _row(rows, "zero_head")["comparison"]["method._target_"] == "my_methods.zero_head"
  assert _row(rows, "wise0.5")["finetune_stop"]["rule"] == "interpolated" and _row(rows, "wise0.5")["curve"] == []
  assert _row(rows, "zero_head")["curve"][0]["step"] == 0 and "from" not in _row(rows, "zero_head")["curve"][0]
  assert all(r.get("val_invariance", "absent") == "absent" for r in rows if schema.is_plain(r))
  assert all("val_invariance" in r for r in rows if not schema.is_plain(r))
  # The docs' TemperedProbe (its logits scaled by 2 and by 1/2: every prediction, an argmax, as it was):
  # one row per temperature, the grid out of its key, the setting in the row.
  assert [r[schema.SETTING] for r in rows if r[schema.METHOD] == "tempered_probe"] == [0.5, 2.0]
  probe = _row(rows, "tempered_probe2")["comparison"]
  assert probe["method._target_"] == "my_methods.TemperedProbe" and "method.temperatures" not in probe


@pytest.mark.slow
def test_a_gridded_method_from_outside_the_package_reaches_the_boards_figures_and_terminal(methods_run):
  """No code of the package names `tempered_probe`: what shows it is its class, through results.json."""
  described = json.loads((methods_run / "results.json").read_text())["methods"]
  assert described["tempered_probe"] == {
    "name": "tempered_probe",
    "title": "tempered_probe",
    "colour": "#2ca02c",
    "setting_name": "temperature",
    "setting_symbol": "T",
  }
  assert described["wise"]["setting_name"] == "alpha" and described["l2sp"]["colour"] == "#17becf"
  (table,) = json.loads((methods_run / "methods.json").read_text())
  lines = {x["method"]: x for x in table["lines"]}
  assert lines["tempered_probe2"][schema.SETTING] == 2.0 and lines["tempered_probe2"]["setting_name"] == "temperature"
  assert lines["wise0.5"]["setting_name"] == "alpha" and lines["lpft"]["setting_name"] is None
  assert "| tempered_probe0.5 " in (methods_run / "methods.md").read_text()
  rows = collect.collect([methods_run])
  printed = terminal.summary(leaderboard.build(rows), methods_run)
  assert "tempered_probe0.5" in printed and "tempered_probe2" in printed
  # The figure draws defined numbers only; the tiny run's probe is at chance off its location.
  rows = [{**r, "invariance": 0.1 * (r[schema.SETTING] or 0.0)} for r in rows]
  ax = pareto.methods_figure(leaderboard.build(rows).methods).axes[0]
  (path,) = [line for line in ax.lines if line.get_label() == "tempered_probe, T ascending"]
  assert path.get_color() == "#2ca02c" and len(path.get_xdata()) == 2


def test_the_pilot_rule_keeps_betas_from_the_first_that_moves_invariance_to_the_first_below_the_bar():
  sys.path.insert(0, str(ROOT / "scripts"))
  try:
    from methods_pilot import beta_grid
  finally:
    sys.path.remove(str(ROOT / "scripts"))
  base = {"model": "m", "pretrain": "translate", "finetune": "full", "finetune_lr": 1e-3, "eval_split": "validation"}
  # beta: (validation in-location accuracy, invariance), plain full at (0.95, 0.40)
  cells = {0.001: (0.95, 0.41), 0.01: (0.94, 0.45), 0.1: (0.92, 0.60), 1.0: (0.90, 0.80), 10.0: (0.50, 0.90)}
  rows = [{**base, "seed": s, "in_acc": 0.95, "invariance": 0.40} for s in (0, 1)]
  rows += [
    {**base, "seed": s, "finetune_method": "l2sp", "method_setting": b, "in_acc": a, "invariance": v}
    for b, (a, v) in cells.items()
    for s in (0, 1)
  ]
  grid, lines = beta_grid(rows)
  assert grid == [0.01, 0.1] and "l2sp0.1 0.920 / 0.600" in lines[0]  # 0.01 is the first to move; 0.1 the first to fall
  with pytest.raises(SystemExit, match="validation split"):
    beta_grid([{**rows[0], "eval_split": "test"}])
