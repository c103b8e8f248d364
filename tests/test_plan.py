"""Row planning (shiftbench/runs/plan.py), on its own: a pure function of a few settings, no JAX, no data."""

import dataclasses
import subprocess
import sys

import pytest

from shiftbench.infra.errors import ConfigError
from shiftbench.rows import schema
from shiftbench.runs import plan


@dataclasses.dataclass(frozen=True)
class FakeMethod:
  """What planning reads of a `methods.Method`."""

  name: str
  needs: tuple[str, ...] = ()
  grid: tuple[float | None, ...] = (None,)
  mode: str = "full"

  def settings(self):
    return self.grid


PLAIN = FakeMethod(schema.PLAIN, mode="full")
LPFT = FakeMethod("lpft", needs=("last",))
WISE = FakeMethod("wise", needs=("last", "full"), grid=(0.0, 1.0))


@dataclasses.dataclass(frozen=True)
class FakeSettings:
  """The planning settings (`plan.PlanSettings`), as `Settings` holds them."""

  seeds: tuple[int, ...] = (0,)
  models: dict = dataclasses.field(default_factory=lambda: {"cnn_fc": {}})
  pretrain_regimes: tuple[str, ...] = ("scratch", "translate")
  finetune_modes: tuple[str, ...] = ("last", "head", "full")
  scratch_modes: tuple[str, ...] = ("full",)
  finetune_rates: tuple[float, ...] = (1e-3,)
  arms: dict = dataclasses.field(default_factory=dict)
  methods: dict = dataclasses.field(default_factory=lambda: {schema.PLAIN: PLAIN})


def _with(*methods, **changes):
  return FakeSettings(methods={m.name: m for m in methods}, **changes)


def _names(rows):
  return [rid.name() for rid in rows]


def test_groups_run_seed_by_model_by_regime_and_hold_one_group_per_rate():
  s = _with(PLAIN, LPFT, WISE, seeds=(0, 1), models={"cnn_fc": {}, "gap": {}}, finetune_rates=(1e-3, 1e-2))
  groups = plan.groups(s)
  assert [g.key for g in groups] == [
    (model, regime, seed) for seed in (0, 1) for model in ("cnn_fc", "gap") for regime in ("scratch", "translate")
  ]
  for group in groups:
    assert [r.rate for r in group.rates] == [1e-3, 1e-2]
    assert group.rows == tuple(rid for r in group.rates for rid in r.rows)
    for at_rate in group.rates:
      assert (at_rate.model, at_rate.regime, at_rate.seed) == group.key
      assert all(plan.pretrained_key(rid) == group.key for rid in at_rate.rows)
      assert all(plan.rate_key(rid) == at_rate.key for rid in at_rate.rows)
  assert plan.rows(s) == [rid for g in groups for rid in g.rows]


def test_plain_rows_run_last_first_then_the_methods_that_start_from_them():
  (_, translate) = plan.groups(_with(PLAIN, LPFT, WISE))
  (at_rate,) = translate.rates
  assert [rid.finetune for rid in at_rate.plain] == ["last", "head", "full"]
  assert all(rid.finetune_method == schema.PLAIN for rid in at_rate.plain)
  assert [rid.method_label for rid in at_rate.methods] == ["lpft", "wise0", "wise1"]
  assert _names(at_rate.rows) == [
    "cnn_fc/translate/last/lr0.001/s0",
    "cnn_fc/translate/head/lr0.001/s0",
    "cnn_fc/translate/full/lr0.001/s0",
    "cnn_fc/translate/full/lpft/lr0.001/s0",
    "cnn_fc/translate/full/wise0/lr0.001/s0",
    "cnn_fc/translate/full/wise1/lr0.001/s0",
  ]
  # Every plain row a method starts from runs before it, in the same rate group.
  for i, rid in enumerate(at_rate.rows):
    method = {m.name: m for m in (LPFT, WISE)}.get(rid.finetune_method)
    for mode in method.needs if method else ():
      assert at_rate.rows.index(rid.plain_sibling(mode)) < i


def test_no_method_rows_after_scratch_and_scratch_runs_its_own_modes():
  (scratch, _) = plan.groups(_with(PLAIN, LPFT, WISE, scratch_modes=("full", "head")))
  (at_rate,) = scratch.rates
  assert [rid.finetune for rid in at_rate.plain] == ["full", "head"] and at_rate.methods == ()


def test_arms_restrict_a_listed_model_and_leave_the_others_alone():
  arms = {"gap": (("scratch", "full"), ("translate", "last"))}
  s = _with(PLAIN, LPFT, models={"cnn_fc": {}, "gap": {}}, finetune_modes=("last", "full"), arms=arms)
  by_key = {g.key: _names(g.rows) for g in plan.groups(s)}
  assert by_key == {
    ("cnn_fc", "scratch", 0): ["cnn_fc/scratch/full/lr0.001/s0"],
    ("cnn_fc", "translate", 0): [
      "cnn_fc/translate/last/lr0.001/s0",
      "cnn_fc/translate/full/lr0.001/s0",
      "cnn_fc/translate/full/lpft/lr0.001/s0",
    ],
    ("gap", "scratch", 0): ["gap/scratch/full/lr0.001/s0"],
    ("gap", "translate", 0): ["gap/translate/last/lr0.001/s0"],  # LP-FT's mode (full) does not run there
  }
  only_translate = _with(PLAIN, arms={"cnn_fc": (("translate", "full"),)})
  assert [g.key for g in plan.groups(only_translate)] == [("cnn_fc", "translate", 0)]
  assert plan.regimes_for(only_translate, "cnn_fc") == ("translate",)


def test_without_plain_a_group_holds_only_method_rows_and_empty_groups_are_left_out():
  s = _with(FakeMethod("l2sp", grid=(0.1, 1.0)))
  (group,) = plan.groups(s)  # scratch has no plain rows and no methods: no group
  assert group.key == ("cnn_fc", "translate", 0)
  (at_rate,) = group.rates
  assert at_rate.plain == () and [rid.method_label for rid in at_rate.methods] == ["l2sp0.1", "l2sp1"]


def test_a_method_whose_plain_rows_do_not_run_is_a_config_error():
  with pytest.raises(ConfigError, match="starts from the plain last rows of cnn_fc after translate"):
    plan.check_method_needs(_with(PLAIN, WISE, finetune_modes=("head", "full")))
  with pytest.raises(ConfigError, match=r"finetune.methods \['lpft'\] have no rows"):
    plan.check_method_needs(_with(PLAIN, LPFT, finetune_modes=("last", "head")))
  plan.check_method_needs(_with(PLAIN, LPFT, WISE))  # all there


def test_planning_imports_no_jax():
  code = "import sys, shiftbench.runs.plan; print('jax' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "False"
