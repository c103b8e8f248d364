"""The claims report: verdicts from seeds, intervals, exactness, and honesty about missing rows."""

import math

import pytest
from scipy import stats

from shiftbench import claims, leaderboard

FC = {
  "_target_": "shiftbench.models.ShiftNet",
  "widths": [8, 16],
  "downsample": "max",
  "padding": "same",
  "head": "fc",
  "fc_hidden": [256, 256],
}
GAP = {**FC, "head": "gap", "fc_hidden": []}
BLUR = {**GAP, "downsample": "blur", "blur_size": 4}
APS = {**GAP, "downsample": "aps", "padding": "circular"}


def _row(model, arch, regime, mode, seed, invariance, **extra):
  return {
    "model": model,
    "architecture": arch,
    "pretrain": regime,
    "finetune": mode,
    "seed": seed,
    "invariance": invariance,
    "datasets": "A -> B",
    **extra,
  }


def _forgetting_rows(seeds=(0, 1, 2), scratch=0.05, last=0.85, full=0.45, fixed=0.06, crop=0.4):
  rows = []
  for s in seeds:
    e = 0.01 * s  # a little seed spread
    rows += [
      _row("cnn_fc", FC, "scratch", "full", s, scratch + e),
      _row("cnn_fc", FC, "translate", "last", s, last - e),
      _row("cnn_fc", FC, "translate", "full", s, full + e),
      _row("cnn_fc", FC, "fixed", "last", s, fixed),
      _row("cnn_fc", FC, "random_crop", "last", s, crop),
    ]
  return rows


def _by_id(result):
  return {c.id: c for c in result}


def test_interval_is_the_t_interval():
  mean, lo, hi = claims.interval([0.1, 0.2, 0.4])
  half = stats.t.ppf(0.975, 2) * stats.tstd([0.1, 0.2, 0.4]) / math.sqrt(3)
  assert mean == pytest.approx(0.7 / 3) and (lo, hi) == pytest.approx((mean - half, mean + half))
  assert math.isnan(claims.interval([0.3])[1])


def test_the_forgetting_result_passes_with_three_seeds():
  c = _by_id(claims.evaluate(_forgetting_rows()))
  for cid in ("C1", "C2", "C2c", "C3a", "C3b"):
    assert c[cid].verdict == claims.PASS, (cid, c[cid])
  assert c["C3a"].values == pytest.approx([0.4, 0.38, 0.36])  # last - full, paired by seed
  assert c["F1"].verdict == claims.FIGURE and c["F1"].kind == "figure"
  assert c["F1"].values == pytest.approx([0.35, 0.34, 0.33])  # random_crop - scratch, every seed
  assert c["F1"].effect.startswith(f"{0.34 / 0.78:.3f}")  # ratio of the seed means of gain and share
  f1 = {d["id"]: d for d in claims.to_json(list(c.values()))}["F1"]
  # `figure` is the share itself; `mean` is its numerator's
  assert f1["figure"] == pytest.approx(0.34 / 0.78) and f1["mean"] == pytest.approx(0.34)
  assert "[+" in c["C2"].effect  # mean and its interval are printed


def test_no_forgetting_and_no_transfer_fail():
  c = _by_id(claims.evaluate(_forgetting_rows(last=0.45, full=0.45, scratch=0.3, fixed=0.45)))
  assert c["C3a"].verdict == claims.FAIL  # last - full is 0 -/+ spread
  assert c["C1"].verdict == claims.FAIL  # scratch at 0.3 is not near chance
  assert c["C2c"].verdict == claims.FAIL  # fixed pretraining as good as translate


def test_fewer_than_three_seeds_or_missing_rows_give_no_verdict():
  c = _by_id(claims.evaluate(_forgetting_rows(seeds=(0, 1))))
  assert {c[i].verdict for i in ("C1", "C2", "C3a", "C3b")} == {claims.FEW_SEEDS}
  assert c["C5"].verdict == c["C4"].verdict == c["C6"].verdict == claims.NOT_RUN
  rows = [r for r in _forgetting_rows() if r["pretrain"] != "fixed"]
  assert _by_id(claims.evaluate(rows))["C2c"].verdict == claims.NOT_RUN


def test_undefined_invariance_does_not_count_as_a_seed():
  rows = _forgetting_rows()
  rows[1]["invariance"] = None  # seed 0's translate/last is undefined
  c = _by_id(claims.evaluate(rows))
  # Three seeds ran, two have the value: "undefined", not "needs ≥3 seeds" (which would ask for more seeds).
  assert c["C2"].n == 2 and c["C2"].verdict == claims.UNDEFINED


def test_not_run_few_seeds_and_undefined_are_distinct_verdicts():
  rows = _forgetting_rows()
  for r in rows:
    if r["pretrain"] == "scratch":
      r["invariance"] = None  # every seed's scratch row ran, none is defined
  c = _by_id(claims.evaluate(rows))
  assert c["C1"].verdict == claims.UNDEFINED and c["C2"].verdict == claims.UNDEFINED  # was "rows not run"
  assert c["F1"].verdict == claims.UNDEFINED
  assert c["C3a"].verdict == claims.PASS  # rows that do not involve scratch are unaffected
  two = [r for r in rows if r["seed"] < 2]
  assert _by_id(claims.evaluate(two))["C1"].verdict == claims.FEW_SEEDS


def test_f1_uses_every_seed_including_one_without_a_gain():
  rows = _forgetting_rows()
  for r in rows:
    if r["seed"] == 2 and (r["pretrain"], r["finetune"]) == ("translate", "last"):
      r["invariance"] = 0.05  # no gain over scratch (0.07) in seed 2: it still counts
  f1 = _by_id(claims.evaluate(rows))["F1"]
  assert f1.n == 3 and f1.denominators == pytest.approx([0.8, 0.78, -0.02])
  assert f1.effect.startswith(f"{0.34 / (1.56 / 3):.3f}")  # dropping seed 2 would give 0.345 / 0.79 = 0.437


def test_a_claim_with_no_effect_passes_at_about_the_nominal_rate():
  """Null calibration: three seeds with no true effect pass a one-sided 'lower bound > 0' claim with
  probability 2.5% (the lower end of a two-sided 95% interval)."""
  import numpy as np

  rng = np.random.default_rng(0)
  trials = 4000
  passes = 0
  for _ in range(trials):
    noise = rng.normal(0.0, 0.1, size=(3, 2))  # scratch and translate/last of 3 seeds, same mean
    rows = []
    for s in range(3):
      rows += [
        _row("cnn_fc", FC, "scratch", "full", s, 0.3 + noise[s, 0]),
        _row("cnn_fc", FC, "translate", "last", s, 0.3 + noise[s, 1]),
      ]
    passes += _by_id(claims.evaluate(rows))["C2"].verdict == claims.PASS
  rate = passes / trials
  assert 0.015 < rate < 0.037, rate  # 2.5% +- 3 binomial standard errors (0.0025)


def test_aps_exactness_and_architecture_twins():
  rows = []
  for s in range(3):
    rows += [
      _row("gap", GAP, "scratch", "full", s, 0.5 + 0.01 * s, consistency=0.6 + 0.01 * s),
      _row("cnn_fc", FC, "scratch", "full", s, 0.05, consistency=0.5),
      _row("blurpool", BLUR, "scratch", "full", s, 0.6, consistency=0.8 - 0.01 * s),
      _row("aps", APS, "scratch", "full", s, 0.9, consistency_circular=1.0, distinct_predictions=5, in_pvalue=1e-9),
    ]
  c = _by_id(claims.evaluate(rows))
  assert c["C4"].verdict == claims.PASS and "gap - cnn_fc" in c["C4"].rows
  assert c["C6"].verdict == claims.PASS and "blurpool - gap" in c["C6"].rows
  assert c["C5"].verdict == claims.PASS and c["C5"].kind == "property"
  rows[-1]["consistency_circular"] = 0.999  # one miss in one row refutes an exact property
  assert _by_id(claims.evaluate(rows))["C5"].verdict == claims.FAIL


def test_aps_property_is_not_passed_by_a_constant_or_chance_predictor():
  def aps_rows(**extra):
    return [_row("aps", APS, "scratch", "full", s, 0.9, consistency_circular=1.0, **extra) for s in range(3)]

  # A constant predictor is exactly consistent under any shift: one class predicted fails the check.
  assert _by_id(claims.evaluate(aps_rows(distinct_predictions=1, in_pvalue=1e-9)))["C5"].verdict == claims.FAIL
  # In-location accuracy not above chance: the consistency measures nothing learned.
  assert _by_id(claims.evaluate(aps_rows(distinct_predictions=4, in_pvalue=0.3)))["C5"].verdict == claims.FAIL
  # Rows without the fields (older results) cannot be checked.
  assert _by_id(claims.evaluate(aps_rows()))["C5"].verdict == claims.UNDEFINED


def test_claims_run_per_comparable_group_and_never_pair_across_groups():
  rows = [{**r, "protocol_key": "k32"} for r in _forgetting_rows()]
  # Another protocol (say canvas 24) holding only the scratch rows: C2 there has no translate rows.
  rows += [{**r, "protocol_key": "k24", "invariance": 0.5} for r in _forgetting_rows() if r["pretrain"] == "scratch"]
  result = claims.evaluate(rows, labels={"k32": "k32 canvas.size=32", "k24": "k24 canvas.size=24"})
  c2 = {c.group: c for c in result if c.id == "C2"}
  assert c2["k32"].verdict == claims.PASS and c2["k24"].verdict == claims.NOT_RUN
  assert "[k24 canvas.size=24]" in c2["k24"].rows
  c1 = {c.group: c for c in result if c.id == "C1"}
  assert c1["k24"].values == [0.5] * 3  # its own scratch rows only


def test_the_leaderboard_carries_the_report(tmp_path):
  board = leaderboard.write_leaderboard(_forgetting_rows(), tmp_path, figures=False)
  md = (tmp_path / "leaderboard.md").read_text()
  assert "## Claims from the literature" in md and "| C3a" in md and claims.PASS in md
  assert "C3a" in board.claims_markdown
  assert (tmp_path / "claims.json").is_file()
