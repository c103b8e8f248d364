"""L2-SP's three rows (issue 32, item 4): `l2sp` (the penalty in the loss, under Adam), `l2sp_decoupled` (the
pull after the optimiser's update, as AdamW decays) and `l2sp_sgd` (the penalty under SGD with momentum, as
Li et al. ran it). Known answers, each printing the largest difference it saw:
  with no loss gradient, k decoupled steps shrink w - w0 by (1 - η β)^k and the classifier by (1 - η β r)^k;
  under plain SGD the coupled penalty at β and the decoupled pull at 2β are the same step;
  decoupled at β = 0 is plain `full` fine-tuning, to the bit (model and curve);
  L2-SP under SGD at β = 0 is full fine-tuning with optax.sgd(rate_factor x rate, momentum=0.9), to the bit.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hydra import compose, initialize_config_dir
from test_schema import ROOT

from shiftbench import methods, models
from shiftbench.infra.errors import ConfigError
from shiftbench.runs import plan
from shiftbench.runs.settings import Settings
from shiftbench.training import optimizers


def _compose(overrides):
  with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
    return compose("config", overrides=overrides)


def _leaves(tree) -> list[np.ndarray]:
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def _largest_difference(a, b) -> float:
  la, lb = _leaves(a), _leaves(b)
  assert len(la) == len(lb) and la and all(x.shape == y.shape for x, y in zip(la, lb))
  return max(float(np.max(np.abs(x - y), initial=0.0)) for x, y in zip(la, lb))


def _params():
  model = models.ShiftNet(num_classes=3, canvas_size=16, widths=(4,), fc_hidden=(8,), rngs=nnx.Rngs(0))
  return nnx.state(model, nnx.Param)


def _is_classifier(path) -> bool:
  return models.CLASSIFIER_NAME in jax.tree_util.keystr(path)


# -- the parts, on their own --------------------------------------------------------------------------
def test_with_no_loss_gradient_the_decoupled_pull_shrinks_by_one_minus_rate_beta_per_step():
  rate, beta, ratio, k = 0.01, 3.0, 0.5, 7
  adam = optimizers.at_rates(optax.adam, (rate,))[rate]  # the run's own kind of optimiser
  tx = methods.L2SPDecoupled(betas=[beta], classifier_ratio=ratio).transform(adam, rate, beta)
  start = _params()
  state = tx.init(start)
  params = jax.tree.map(lambda w: w + 0.5, start)  # w - w0 = 0.5 on the transferred weights
  zero = jax.tree.map(jnp.zeros_like, start)  # Adam's update on zero gradients is zero
  for _ in range(k):
    updates, state = tx.update(zero, state, params)
    params = optax.apply_updates(params, updates)

  def want(path, w0):
    if _is_classifier(path):
      return (w0 + 0.5) * (1 - rate * beta * ratio) ** k
    return w0 + 0.5 * (1 - rate * beta) ** k

  expected = jax.tree_util.tree_map_with_path(want, start)
  d = _largest_difference(params, expected)
  print(f"decoupled pull after {k} steps vs (1 - eta beta)^k: {d}")
  assert d < 1e-6


def test_under_plain_sgd_the_coupled_penalty_at_beta_is_the_decoupled_pull_at_two_beta():
  rate, beta, ratio = 0.05, 0.3, 0.1
  start = _params()
  keys = iter(jax.random.split(jax.random.key(0), 100))
  moved = jax.tree.map(lambda w: w + jax.random.normal(next(keys), w.shape), start)
  grads = jax.tree.map(lambda w: jax.random.normal(next(keys), w.shape), start)
  coupled = optax.chain(methods.l2sp_penalty(beta, beta * ratio), optax.sgd(rate))
  decoupled = methods.decoupled_pull(optax.sgd(rate), rate, 2 * beta, ratio)
  steps = []
  for tx in (coupled, decoupled):
    updates, _ = tx.update(grads, tx.init(start), moved)
    steps.append(updates)
  d = _largest_difference(*steps)
  print(f"SGD step, coupled at beta vs decoupled at 2 beta: {d}")
  assert d < 1e-6
  assert (
    _largest_difference(steps[0], optax.sgd(rate).update(grads, optax.sgd(rate).init(start), moved)[0]) > 0.01
  )  # a real pull


def test_a_decoupled_pull_past_w0_is_a_one_line_error_and_beta_zero_is_the_optimiser_itself():
  adam = optax.adam(0.01)
  method = methods.L2SPDecoupled(betas=[0, 100])
  assert method.transform(adam, 0.01, 0.0) is adam
  with pytest.raises(ValueError, match=r"beta 200 and rate 0.01 pulls 2 of the way .* must lie in \(0, 1\]"):
    method.transform(adam, 0.01, 200.0)


# -- the config door ----------------------------------------------------------------------------------
def test_the_l2sp_variants_are_selectable_and_shown_by_their_titles():
  s = Settings.from_config(
    _compose(
      ["logger=none", "model=cnn_fc", "finetune.modes=[last,full]", "finetune.methods=[plain,l2sp_decoupled,l2sp_sgd]"]
    )
  )
  _, translate = [g for g in plan.groups(s) if g.seed == 0]
  labels = [r.method_label for r in translate.rates[0].rows]
  assert labels == ["plain", "plain", "l2sp_decoupled1", "l2sp_decoupled10", "l2sp_decoupled100"] + [
    f"l2sp_sgd{b:g}" for b in (0, 0.005, 0.05, 0.5)
  ]
  titles = {name: methods.BUILTIN[name]().describe()["title"] for name in ("l2sp", "l2sp_decoupled", "l2sp_sgd")}
  assert titles == {"l2sp": "L2-SP under Adam", "l2sp_decoupled": "L2-SP (decoupled)", "l2sp_sgd": "L2-SP under SGD"}
  for bad, message in [
    ("{_target_: shiftbench.methods.L2SPSGD, rate_factor: 0}", "rate_factor must be > 0, got 0"),
    ("{_target_: shiftbench.methods.L2SPDecoupled, betas: [-1]}", r"betas must lie in >= 0, got \[-1.0\]"),
  ]:
    with pytest.raises(ConfigError, match=message) as e:
      Settings.from_config(_compose(["logger=none", f"finetune.methods=[plain,{bad}]"]))
    assert "\n" not in str(e.value)


# -- the identities, through the protocol's context ---------------------------------------------------
@pytest.fixture
def protocol(methods_protocol):
  p, source, done = methods_protocol
  _, full = plan.groups(p.s)[0].rows
  return p, source, done, full, p._tuned[plan.rate_key(full)][full]


def _context(protocol, name, setting):
  p, source, done, full, _ = protocol
  rid = full._replace(finetune_method=name, method_setting=setting)
  return p.context(rid, source, done[full.plain_sibling("last")]["curve"][-1], done)


def _distance_from_pretrained(p, full, source, model) -> float:
  transferred = lambda m: jax.tree.leaves(nnx.state(m, nnx.All(nnx.Param, models.TRANSFERABLE)))  # noqa: E731
  pretrained = transferred(p.start(full, source))
  return sum(float(jnp.sum((x - y) ** 2)) for x, y in zip(transferred(model), pretrained))


def test_decoupled_l2sp_at_zero_is_exactly_plain_full_and_a_larger_beta_stays_closer(protocol):
  p, source, done, full, plain_full = protocol
  method = methods.L2SPDecoupled(betas=[0.0, 50.0])
  zero = method.run(_context(protocol, "l2sp_decoupled", 0.0), 0.0)
  d = _largest_difference(nnx.state(zero.model), nnx.state(plain_full))
  print(f"decoupled L2-SP beta=0 vs plain full: {d}")
  assert d == 0.0 and json.dumps(zero.curve) == json.dumps(done[full]["curve"])
  pulled = method.run(_context(protocol, "l2sp_decoupled", 50.0), 50.0).model  # η β = 0.5 at the tiny rate 1e-2
  assert _distance_from_pretrained(p, full, source, pulled) < 0.5 * _distance_from_pretrained(
    p, full, source, plain_full
  )


def test_l2sp_under_sgd_at_zero_is_full_fine_tuning_with_sgd_and_momentum(protocol):
  p, source, done, full, plain_full = protocol
  method = methods.L2SPSGD(betas=[0.0, 0.5], rate_factor=3.0)
  ctx = _context(protocol, "l2sp_sgd", 0.0)
  sgd = ctx.finetune(ctx.fresh(), tx=optax.sgd(3.0 * ctx.rate, momentum=0.9), mode="full", probe=True)
  zero = method.run(ctx, 0.0)
  d = _largest_difference(nnx.state(zero.model), nnx.state(sgd.model))
  print(f"L2-SP under SGD beta=0 vs optax.sgd(3 x rate, momentum=0.9): {d}")
  assert d == 0.0 and json.dumps(zero.curve) == json.dumps(sgd.curve)
  assert _largest_difference(nnx.state(zero.model), nnx.state(plain_full)) > 0  # not Adam's model
  pulled = method.run(_context(protocol, "l2sp_sgd", 0.5), 0.5).model
  assert _distance_from_pretrained(p, full, source, pulled) < _distance_from_pretrained(p, full, source, zero.model)
