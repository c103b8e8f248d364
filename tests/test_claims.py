"""The claims report: outcomes from seeds and intervals, collapsed seeds counted against, claims per
fine-tune rate with scratch at its best validation rate, exactness, and honesty about missing rows."""

import json
import math
import re
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from shiftbench.claims import catalogue as claims
from shiftbench.claims import verdicts
from shiftbench.reporting import leaderboard, terminal

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
VGG16 = {"_target_": "shiftbench.models.VGG", "_partial_": True, "depth": 16, "batch_norm": False, "width": 0.125}
DENSENET = {"_target_": "shiftbench.models.DenseNet", "_partial_": True, "width": 0.125}
LR = 0.01


def _row(model, arch, regime, mode, seed, invariance, lr=LR, **extra):
  return {
    "model": model,
    "architecture": arch,
    "pretrain": regime,
    "finetune": mode,
    "finetune_lr": lr,
    "seed": seed,
    "invariance": invariance,
    "chance": 0.1,
    "datasets": "A -> B",
    **extra,
  }


def _forgetting_rows(
  seeds=(0, 1, 2), scratch=0.05, last=0.85, full=0.45, fixed=0.06, crop=0.4, model="cnn_fc", arch=FC
):
  rows = []
  for s in seeds:
    e = 0.01 * s  # a little seed spread
    rows += [
      _row(model, arch, "scratch", "full", s, scratch + e),
      _row(model, arch, "translate", "last", s, last - e),
      _row(model, arch, "translate", "full", s, full + e),
      _row(model, arch, "fixed", "last", s, fixed),
      _row(model, arch, "random_crop", "last", s, crop),
    ]
  return rows


def _by_id(result):
  """The primary entry of each claim id (first one: the only rate of these rows)."""
  out = {}
  for c in result:
    if c.primary:
      out.setdefault(c.id, c)
  return out


def _sample(values):
  return verdicts.Sample(list(range(len(values))), dict(enumerate(values)))


def test_interval_is_the_t_interval():
  mean, lo, hi = claims.interval([0.1, 0.2, 0.4])
  half = stats.t.ppf(0.975, 2) * stats.tstd([0.1, 0.2, 0.4]) / math.sqrt(3)
  assert mean == pytest.approx(0.7 / 3) and (lo, hi) == pytest.approx((mean - half, mean + half))
  assert math.isnan(claims.interval([0.3])[1])


def test_interval_known_answer():
  # 0.1, 0.2, 0.6: mean 0.3, sd sqrt(0.07) = 0.264575, t(0.975, df=2) = 4.302653 (tables),
  # half width 4.302653 * 0.264575 / sqrt(3) = 0.657241.
  mean, lo, hi = verdicts.interval([0.1, 0.2, 0.6])
  assert (
    mean == pytest.approx(0.3) and lo == pytest.approx(-0.357241, abs=1e-6) and hi == pytest.approx(0.957241, abs=1e-6)
  )


def test_outcomes_from_where_the_interval_lies():
  above = verdicts.ABOVE_ZERO
  assert verdicts.outcome(_sample([0.3, 0.31, 0.32]), above) == verdicts.SUPPORTED
  assert verdicts.outcome(_sample([-0.3, -0.31, -0.32]), above) == verdicts.CONTRADICTED
  assert verdicts.outcome(_sample([0.1, -0.1, 0.05]), above) == verdicts.INCONCLUSIVE
  below = verdicts.Rule("below", 0.2)  # C1's rule: the upper bound under 0.2
  assert verdicts.outcome(_sample([0.05, 0.06, 0.07]), below) == verdicts.SUPPORTED
  assert verdicts.outcome(_sample([0.3, 0.31, 0.32]), below) == verdicts.CONTRADICTED
  assert verdicts.outcome(_sample([0.1, 0.2, 0.3]), below) == verdicts.INCONCLUSIVE
  assert verdicts.outcome(_sample([0.3, 0.31]), above) == verdicts.TOO_FEW_SEEDS
  assert verdicts.outcome(None, above) == verdicts.NOT_RUN_OUTCOME
  assert verdicts.outcome(verdicts.Sample([0, 1, 2], {0: 0.3, 1: 0.31}), above) == verdicts.UNDEFINED_OUTCOME


def test_a_collapsed_seed_counts_against_the_claim():
  # Seeds 0-3 clearly on the claimed side, seed 4's value undefined (its fine-tune collapsed).
  sample = verdicts.Sample([0, 1, 2, 3, 4], {0: 0.3, 1: 0.31, 2: 0.32, 3: 0.33})
  assert sample.collapsed == [4]
  assert verdicts.outcome(sample, verdicts.ABOVE_ZERO) == verdicts.INCONCLUSIVE  # at best, never supported
  against = verdicts.Sample([0, 1, 2, 3, 4], {0: -0.3, 1: -0.31, 2: -0.32, 3: -0.33})
  assert verdicts.outcome(against, verdicts.ABOVE_ZERO) == verdicts.CONTRADICTED  # still possible


def test_a_collapsed_seed_makes_a_would_be_supported_claim_inconclusive_and_is_listed():
  rows = _forgetting_rows(seeds=range(5))
  c = _by_id(claims.evaluate(rows))
  assert c["C3a"].outcome == verdicts.SUPPORTED and c["C3a"].verdict == claims.PASS
  for r in rows:
    if r["seed"] == 3 and (r["pretrain"], r["finetune"]) == ("translate", "full"):
      r["invariance"] = None  # a fine-tune that predicts one class: invariance undefined
  c = _by_id(claims.evaluate(rows))
  assert c["C3a"].outcome == verdicts.INCONCLUSIVE and c["C3a"].collapsed == [3] and c["C3a"].n == 4
  assert "1 of 5 seeds collapsed" in c["C3a"].effect
  entry = next(e for e in claims.to_json(claims.evaluate(rows)) if e["id"] == "C3a")
  assert entry["collapsed"] == [3] and entry["seeds"] == [0, 1, 2, 3, 4] and entry["outcome"] == "inconclusive"


def test_the_forgetting_result_is_supported_with_three_seeds():
  c = _by_id(claims.evaluate(_forgetting_rows()))
  for cid in ("C1", "C2", "C2c", "C3a", "C3b"):
    assert c[cid].verdict == claims.PASS and c[cid].outcome == verdicts.SUPPORTED, (cid, c[cid])
  assert c["C3a"].values == pytest.approx([0.4, 0.38, 0.36])  # last - full, paired by seed
  assert c["F1"].verdict == claims.FIGURE and c["F1"].kind == "figure" and c["F1"].outcome == "figure"
  assert c["F1"].values == pytest.approx([0.35, 0.34, 0.33])  # random_crop - scratch, every seed
  assert c["F1"].effect.startswith(f"{0.34 / 0.78:.3f}")  # ratio of the seed means of gain and share
  f1 = {d["id"]: d for d in claims.to_json(list(c.values()))}["F1"]
  # `figure` is the share itself; `mean` is its numerator's
  assert f1["figure"] == pytest.approx(0.34 / 0.78) and f1["mean"] == pytest.approx(0.34)
  assert "[+" in c["C2"].effect  # mean and its interval are printed


def test_no_forgetting_and_no_transfer_are_not_supported():
  c = _by_id(claims.evaluate(_forgetting_rows(last=0.45, full=0.45, scratch=0.3, fixed=0.45)))
  assert c["C3a"].outcome == verdicts.INCONCLUSIVE  # last - full is 0 -/+ spread: straddles 0
  assert c["C1"].outcome == verdicts.CONTRADICTED and c["C1"].verdict == claims.FAIL  # 0.3: not near chance
  assert c["C2c"].outcome == verdicts.INCONCLUSIVE  # fixed pretraining as good as translate
  c = _by_id(claims.evaluate(_forgetting_rows(last=0.2, full=0.6)))
  assert c["C3a"].outcome == verdicts.CONTRADICTED  # full fine-tuning gained invariance: the other side


def test_fewer_than_three_seeds_or_missing_rows_give_no_verdict():
  c = _by_id(claims.evaluate(_forgetting_rows(seeds=(0, 1))))
  assert {c[i].verdict for i in ("C1", "C2", "C3a", "C3b")} == {claims.FEW_SEEDS}
  assert {c[i].outcome for i in ("C1", "C2", "C3a", "C3b")} == {verdicts.TOO_FEW_SEEDS}
  assert c["C5"].verdict == c["C4"].verdict == c["C6"].verdict == claims.NOT_RUN
  assert c["C5"].outcome == c["C4"].outcome == c["C6"].outcome == verdicts.NOT_RUN_OUTCOME
  rows = [r for r in _forgetting_rows() if r["pretrain"] != "fixed"]
  assert _by_id(claims.evaluate(rows))["C2c"].outcome == verdicts.NOT_RUN_OUTCOME


def test_undefined_invariance_does_not_count_as_a_seed():
  rows = _forgetting_rows()
  rows[1]["invariance"] = None  # seed 0's translate/last is undefined
  c = _by_id(claims.evaluate(rows))
  # Three seeds ran, two have the value: "undefined", not "needs ≥3 seeds" (which would ask for more seeds).
  assert c["C2"].n == 2 and c["C2"].verdict == claims.UNDEFINED and c["C2"].outcome == "undefined"
  assert c["C2"].collapsed == [0]


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


def test_a_claim_with_an_effect_of_exactly_delta_passes_at_about_the_nominal_rate():
  """Null calibration: three seeds whose true effect is exactly the smallest effect of interest δ (the
  null's edge) pass a one-sided 'lower bound > δ' claim with probability 2.5% (the lower end of a
  two-sided 95% interval; a family of one is not adjusted)."""
  rng = np.random.default_rng(0)
  trials = 4000
  passes = 0
  for _ in range(trials):
    noise = rng.normal(0.0, 0.1, size=(3, 2))  # scratch and translate/last of 3 seeds, δ apart
    rows = []
    for s in range(3):
      rows += [
        _row("cnn_fc", FC, "scratch", "full", s, 0.3 + noise[s, 0]),
        _row("cnn_fc", FC, "translate", "last", s, 0.3 + verdicts.SMALLEST_EFFECT + noise[s, 1]),
      ]
    passes += _by_id(claims.evaluate(rows))["C2"].outcome == verdicts.SUPPORTED
  rate = passes / trials
  assert 0.015 < rate < 0.037, rate  # 2.5% +- 3 binomial standard errors (0.0025)


def _two_rate_rows(val=(0.9, 0.7), test_scratch=(0.05, 0.15)):
  """Every arm at rates 0.001 and 0.01; scratch's validation accuracy and test invariance per rate."""
  rows = []
  for lr, v, inv in zip((0.001, 0.01), val, test_scratch):
    for s in range(3):
      e = 0.01 * s
      rows += [
        _row("cnn_fc", FC, "scratch", "full", s, inv + e, lr=lr, val_in_acc=v + e),
        _row("cnn_fc", FC, "translate", "last", s, 0.85 - e, lr=lr),
        _row("cnn_fc", FC, "translate", "full", s, (0.45 if lr == 0.01 else 0.7) + e, lr=lr),
        _row("cnn_fc", FC, "fixed", "last", s, 0.06, lr=lr),
        _row("cnn_fc", FC, "random_crop", "last", s, 0.4, lr=lr),
      ]
  return rows


def test_claims_at_a_rate_get_one_entry_per_rate_and_scratch_at_its_best_validation_rate():
  result = claims.evaluate(_two_rate_rows())
  c3b = [c for c in result if c.id == "C3b" and c.scratch_at == "best_validation"]
  assert [c.finetune_lr for c in c3b] == [0.001, 0.01]
  assert {c.scratch_lr for c in c3b} == {0.001}  # highest mean val_in_acc
  assert c3b[0].rows == "cnn_fc: translate/full@0.001 - scratch/full@0.001 (best val)"
  assert c3b[1].values == pytest.approx([0.45 - 0.05] * 3)  # translate/full@0.01 - scratch/full@0.001
  for cid in ("C2", "C2c", "F1", "C3a"):
    assert [c.finetune_lr for c in result if c.id == cid and c.primary] == [0.001, 0.01], cid
  (c1,) = [c for c in result if c.id == "C1"]
  assert c1.finetune_lr is None and c1.scratch_lr == 0.001 and c1.rows == "cnn_fc: scratch/full@0.001 (best val)"


def test_the_scratch_rate_is_chosen_on_validation_not_on_test():
  # Rate 0.01 has the lower test invariance (which would make C1 easiest to support) but the worse
  # validation accuracy: scratch is judged at 0.001.
  result = claims.evaluate(_two_rate_rows(val=(0.9, 0.7), test_scratch=(0.15, 0.05)))
  (c1,) = [c for c in result if c.id == "C1"]
  assert c1.scratch_lr == 0.001 and c1.values == pytest.approx([0.15, 0.16, 0.17])
  flipped = claims.evaluate(_two_rate_rows(val=(0.7, 0.9), test_scratch=(0.15, 0.05)))
  assert next(c for c in flipped if c.id == "C1").scratch_lr == 0.01
  tie = claims.evaluate(_two_rate_rows(val=(0.8, 0.8)))
  assert next(c for c in tie if c.id == "C1").scratch_lr == 0.001  # ties: the smaller rate


def test_no_validation_accuracy_with_several_rates_leaves_the_scratch_claims_not_run():
  rows = [{k: v for k, v in r.items() if k != "val_in_acc"} for r in _two_rate_rows()]
  c = _by_id(claims.evaluate(rows))
  assert c["C1"].outcome == c["C2"].outcome == c["C3b"].outcome == verdicts.NOT_RUN_OUTCOME
  assert "val_in_acc" in c["C1"].note and "val_in_acc" in c["C1"].effect
  assert c["C3a"].outcome == verdicts.SUPPORTED  # does not involve scratch


def test_c2_and_c3b_also_compare_scratch_at_the_same_rate():
  result = claims.evaluate(_two_rate_rows())
  same = [c for c in result if c.scratch_at == "same_rate"]
  assert sorted((c.id, c.finetune_lr) for c in same) == [("C2", 0.001), ("C2", 0.01), ("C3b", 0.001), ("C3b", 0.01)]
  c3b_01 = next(c for c in same if c.id == "C3b" and c.finetune_lr == 0.01)
  assert c3b_01.scratch_lr == 0.01 and "scratch/full@0.01 (same rate)" in c3b_01.rows
  assert c3b_01.values == pytest.approx([0.45 - 0.15] * 3)
  # Secondary entries: folded under the primary entry of their claim and rate, labelled, never its peers.
  entries = claims.to_json(result)
  assert not any(e["scratch_at"] == "same_rate" for e in entries) and all(e["primary"] for e in entries)
  folded = {(e["id"], e["finetune_lr"]): e["secondaries"] for e in entries if e["secondaries"]}
  assert sorted(folded) == [("C2", 0.001), ("C2", 0.01), ("C3b", 0.001), ("C3b", 0.01)]
  (sec,) = folded[("C3b", 0.01)]
  assert sec["primary"] is False and sec["entry"] == "secondary: scratch at the same rate"
  assert sec["scratch_at"] == "same_rate" and sec["values"] == pytest.approx([0.3] * 3)
  ids = [row[0] for row in claims.table(result)]
  assert ids[ids.index("C3b") + 1] == "↳ C3b" and ids.count("↳ C3b") == 2
  md, text = claims.markdown(result), terminal.claims_table(result)
  for out in (md, text):
    assert out.count("↳ C3b") == 2 and out.index("C3b") < out.index("↳ C3b"), out
  assert "secondary: scratch at the same rate" in md and "secondary: cnn_fc:" in text


def test_vgg16_is_an_fc_head_network_for_c1_to_c3():
  rows = _forgetting_rows(model="vgg16", arch=VGG16)
  rows += [_row("densenet121", DENSENET, "scratch", "full", s, 0.6) for s in range(3)]
  c = {(x.id, x.rows.split(":")[0]) for x in claims.evaluate(rows)}
  for cid in ("C1", "C2", "C2c", "F1", "C3a", "C3b"):
    assert (cid, "vgg16") in c and (cid, "densenet121") not in c, cid
  assert _by_id(claims.evaluate(rows))["C3b"].outcome == verdicts.SUPPORTED


def _architecture_rows(fc_twin=True, **blur_extra):
  """GAP, BlurPool and APS models from scratch (and the GAP model's FC twin, unless the rows it is added
  to have their own `cnn_fc`)."""
  rows = []
  for s in range(3):
    ok = {"in_pvalue": 1e-9, "distinct_predictions": 5}
    rows += [
      _row("gap", GAP, "scratch", "full", s, 0.5 + 0.01 * s, consistency_local=0.6 + 0.01 * s, **ok),
      *([_row("cnn_fc", FC, "scratch", "full", s, 0.05, consistency_local=0.5, **ok)] if fc_twin else []),
      _row("blurpool", BLUR, "scratch", "full", s, 0.6, **{"consistency_local": 0.8 - 0.01 * s, **ok, **blur_extra}),
      _row("aps", APS, "scratch", "full", s, 0.9, consistency_circular=1.0, distinct_predictions=5, in_pvalue=1e-9),
    ]
  return rows


def test_aps_exactness_and_architecture_twins():
  rows = _architecture_rows()
  c = _by_id(claims.evaluate(rows))
  assert c["C4"].verdict == claims.PASS and "gap - cnn_fc" in c["C4"].rows and "gap@0.01" in c["C4"].rows
  assert c["C6"].verdict == claims.PASS and "blurpool - gap" in c["C6"].rows and "consistency_local" in c["C6"].rows
  assert c["C5"].verdict == claims.PASS and c["C5"].kind == "property" and c["C5"].outcome == verdicts.SUPPORTED
  rows[-1]["consistency_circular"] = 0.999  # one miss in one row refutes an exact property
  c5 = _by_id(claims.evaluate(rows))["C5"]
  assert c5.verdict == claims.FAIL and c5.outcome == verdicts.CONTRADICTED


def test_c6_is_not_supported_by_a_constant_predictor():
  # A BlurPool net that predicts one class is perfectly consistent (1.0) under any shift.
  rows = _architecture_rows(distinct_predictions=1, consistency_local=1.0)
  c6 = _by_id(claims.evaluate(rows))["C6"]
  assert c6.outcome == verdicts.UNDEFINED_OUTCOME and c6.collapsed == [0, 1, 2] and c6.verdict != claims.PASS
  # Accuracy not above chance at the fine-tune location: the same.
  rows = _architecture_rows(in_pvalue=0.3, consistency_local=1.0)
  assert _by_id(claims.evaluate(rows))["C6"].outcome == verdicts.UNDEFINED_OUTCOME
  # One collapsed seed of three: defined for two only.
  rows = _architecture_rows()
  next(r for r in rows if r["model"] == "blurpool" and r["seed"] == 1)["distinct_predictions"] = 1
  c6 = _by_id(claims.evaluate(rows))["C6"]
  assert c6.collapsed == [1] and c6.outcome != verdicts.SUPPORTED


def test_c6_without_local_consistency_is_not_run_and_names_the_metric():
  rows = [{k: v for k, v in r.items() if k != "consistency_local"} for r in _architecture_rows()]
  for r in rows:
    r["consistency"] = 0.9 if r["model"] == "blurpool" else 0.5  # the global score is not used instead
  c6 = _by_id(claims.evaluate(rows))["C6"]
  assert c6.outcome == verdicts.NOT_RUN_OUTCOME and "consistency_local" in c6.note


def test_aps_property_is_not_passed_by_a_constant_or_chance_predictor():
  def aps_rows(n=3, **extra):
    return [_row("aps", APS, "scratch", "full", s, 0.9, consistency_circular=1.0, **extra) for s in range(n)]

  # A constant predictor is exactly consistent under any shift: it cannot pass (or test) the identity.
  c5 = _by_id(claims.evaluate(aps_rows(distinct_predictions=1, in_pvalue=1e-9)))["C5"]
  assert c5.outcome == verdicts.UNDEFINED_OUTCOME and c5.verdict != claims.PASS and "3 of 3 rows" in c5.note
  # In-location accuracy not above chance: the consistency measures nothing learned.
  c5 = _by_id(claims.evaluate(aps_rows(distinct_predictions=4, in_pvalue=0.3)))["C5"]
  assert c5.outcome == verdicts.UNDEFINED_OUTCOME and c5.verdict != claims.PASS
  # Rows without the fields (older results) cannot be checked.
  assert _by_id(claims.evaluate(aps_rows()))["C5"].verdict == claims.UNDEFINED
  # A failed fine-tune among responsive rows is left out and said, not read as a broken identity (0.5.0's
  # reproduce: one aps row at lr 1e-4 sat at chance while all 25 were exactly 1).
  rows = aps_rows(n=4, distinct_predictions=4, in_pvalue=1e-9)
  rows[0]["in_pvalue"] = 0.4
  c5 = _by_id(claims.evaluate(rows))["C5"]
  assert c5.outcome == verdicts.SUPPORTED and c5.n == 3 and c5.note.startswith("1 of 4 rows not checkable")
  rows[1]["consistency_circular"] = 0.99  # a responsive row below 1 refutes it
  assert _by_id(claims.evaluate(rows))["C5"].outcome == verdicts.CONTRADICTED


def test_property_checks_are_listed_after_the_replications():
  result = claims.evaluate(_forgetting_rows() + _architecture_rows(fc_twin=False))
  kinds = [c.kind for c in result]
  assert "property" in kinds and kinds.index("property") > max(i for i, k in enumerate(kinds) if k != "property")
  ids = [row[0] for row in claims.table(result)]
  assert ids.index("C5") > ids.index("C6") > ids.index("C4")
  md = claims.markdown(result)
  assert md.index("| C6") < md.index("### Property checks") < md.index("| C5")
  text = terminal.claims_table(result)
  assert text.index("C6") < text.index("property checks:") < text.index("C5")


def test_claims_json_has_an_outcome_on_every_entry(tmp_path):
  rows = _two_rate_rows() + _architecture_rows(fc_twin=False)
  leaderboard.write_leaderboard(rows, tmp_path, figures=False)
  entries = json.loads((tmp_path / "claims.json").read_text())
  assert entries and all(e["outcome"] in verdicts.OUTCOMES for e in entries)
  assert {e["outcome"] for e in entries} >= {"supported", "figure"}
  keys = {"model", "finetune_lr", "scratch_lr", "scratch_at", "collapsed", "seeds", "verdict"}
  assert all(keys <= e.keys() for e in entries)
  assert {e["model"] for e in entries if e["id"] == "C3b"} == {"cnn_fc"} and not any(
    e["model"] for e in entries if e["id"] in ("C4", "C6")
  )
  assert {e["finetune_lr"] for e in entries if e["id"] == "C3b"} == {0.001, 0.01}
  assert next(e for e in entries if e["id"] == "C5")["model"] == "aps"


def test_claims_run_per_comparable_group_and_never_pair_across_groups():
  rows = [{**r, "protocol_key": "k32"} for r in _forgetting_rows()]
  # Another protocol (say canvas 24) holding only the scratch rows: C2 there has no translate rows.
  rows += [{**r, "protocol_key": "k24", "invariance": 0.5} for r in _forgetting_rows() if r["pretrain"] == "scratch"]
  result = claims.evaluate(rows, labels={"k32": "k32 canvas.size=32", "k24": "k24 canvas.size=24"})
  c2 = {c.group: c for c in result if c.id == "C2" and c.primary}
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


# Fine-tuning methods (M1-M3): synthetic method rows beside the plain rows of `_forgetting_rows`.


def _method_row(method, seed, off_acc, in_acc=0.9, alpha=None, beta=None, model="cnn_fc", arch=FC, **extra):
  """A method's row whose off-location accuracy (the methods' endpoint) is `off_acc`; its invariance is the
  same number unless `extra` gives one (only the endpoint matters to M1-M3)."""
  row = _row(model, arch, "translate", "full", seed, off_acc, in_acc=in_acc, off_acc=off_acc)
  return {**row, "finetune_method": method, "method_setting": alpha if alpha is not None else beta, **extra}


def _plain(full=0.45, full_acc=0.9, full_val=0.9, seeds=(0, 1, 2)):
  """The plain rows of `_forgetting_rows`, with in-location and validation accuracy on plain full, and
  off-location accuracy equal to the invariance given."""
  rows = _forgetting_rows(seeds=seeds, full=full)
  for r in rows:
    r["off_acc"] = r["invariance"]
    r["in_acc"] = full_acc if (r["pretrain"], r["finetune"]) == ("translate", "full") else 0.8
    r["val_in_acc"] = full_val if (r["pretrain"], r["finetune"]) == ("translate", "full") else 0.8
  return rows


def _spread(values, seeds=(0, 1, 2)):
  """One value per seed around `values` (a float or one per seed)."""
  return [values[i] if isinstance(values, (list, tuple)) else values + 0.01 * s for i, s in enumerate(seeds)]


def _claims_of(rows, cid):
  return [c for c in claims.evaluate(rows) if c.id == cid]


def test_method_rows_never_enter_the_literatures_claims():
  plain = _forgetting_rows()
  before = [(c.id, c.rows, c.outcome, c.values) for c in claims.evaluate(plain) if c.kind != "method"]
  extreme = []
  for s in range(3):  # at translate/full like plain full, and at last-like settings: far off every plain number
    extreme += [
      _method_row("lpft", s, -5.0),
      _method_row("wise", s, 5.0, alpha=0.0),
      _method_row("wise", s, -5.0, alpha=1.0),
      _method_row("l2sp", s, 9.0, beta=0.01),
      {**_method_row("mine", s, 7.0), "pretrain": "scratch"},
    ]
  after = [(c.id, c.rows, c.outcome, c.values) for c in claims.evaluate(plain + extreme) if c.kind != "method"]
  assert after == before
  assert {i for i, *_ in after} >= {"C1", "C2", "C2c", "F1", "C3a", "C3b"}


def test_m1_lpft_against_plain_full_per_seed():
  rows = _plain(full=0.45)
  lpft = [_method_row("lpft", s, v) for s, v in enumerate(_spread(0.6))]
  (m1,) = _claims_of(rows + lpft, "M1")
  assert m1.outcome == verdicts.SUPPORTED and m1.kind == "method" and m1.model == "cnn_fc" and m1.finetune_lr == LR
  assert m1.values == pytest.approx([0.6 - 0.45] * 3)  # paired by seed: both rows spread alike
  assert m1.rows == "cnn_fc: translate/full lpft@0.01 - translate/full@0.01"
  lower = [_method_row("lpft", s, v) for s, v in enumerate(_spread(0.3))]
  assert _claims_of(rows + lower, "M1")[0].outcome == verdicts.CONTRADICTED
  noisy = [_method_row("lpft", s, v) for s, v in enumerate([0.6, 0.3, 0.5])]
  assert _claims_of(rows + noisy, "M1")[0].outcome == verdicts.INCONCLUSIVE


def _wise(inv_half, acc_half, inv_one=0.45, acc_one=0.9, with_one=True):
  rows = []
  for s, (ih, ah) in enumerate(zip(_spread(inv_half), _spread(acc_half))):
    rows.append(_method_row("wise", s, ih, in_acc=ah, alpha=0.5))
    rows.append(_method_row("wise", s, inv_one + 0.01 * s, in_acc=acc_one + 0.01 * s, alpha=1.0) if with_one else None)
  return [r for r in rows if r]


def test_m2_needs_more_off_location_accuracy_at_half_and_accuracy_within_the_guard():
  rows = _plain()
  (m2,) = _claims_of(rows + _wise(0.6, 0.88), "M2")  # +0.15 off_acc, -0.02 in_acc: within 0.05
  assert m2.outcome == verdicts.SUPPORTED and m2.method_setting == 0.5 and m2.values == pytest.approx([0.15] * 3)
  assert m2.rows == "cnn_fc: translate/full wise0.5@0.01 - translate/full wise1@0.01"
  assert "in_acc difference -0.020" in m2.note and "in_acc difference -0.020" in m2.effect
  # The same invariance gain bought with 0.1 of accuracy: the guard's upper bound is below -0.05.
  (m2,) = _claims_of(rows + _wise(0.6, 0.8), "M2")
  assert m2.outcome == verdicts.CONTRADICTED and m2.values == pytest.approx([0.15] * 3)
  # An accuracy difference whose interval straddles -0.05: neither bound decides.
  (m2,) = _claims_of(rows + _wise(0.6, [0.82, 0.90, 0.86]), "M2")
  assert m2.outcome == verdicts.INCONCLUSIVE
  # Less off-location accuracy at 0.5 than at 1: contradicted whatever the in-location accuracy.
  assert _claims_of(rows + _wise(0.3, 0.9), "M2")[0].outcome == verdicts.CONTRADICTED
  # Off-location accuracy straddling 0 with in-location accuracy in the guard: inconclusive.
  assert _claims_of(rows + _wise([0.6, 0.3, 0.5], 0.9), "M2")[0].outcome == verdicts.INCONCLUSIVE


def test_m2_falls_back_to_plain_full_for_alpha_one_and_says_so():
  rows = _plain(full=0.45, full_acc=0.9)
  (m2,) = _claims_of(rows + _wise(0.6, 0.89, with_one=False), "M2")
  assert "plain full" in m2.rows and "wise1" not in m2.rows
  assert m2.values == pytest.approx([0.6 - 0.45] * 3) and m2.outcome == verdicts.SUPPORTED
  only_one = [r for r in _wise(0.6, 0.9) if r["method_setting"] == 1.0]
  (m2,) = _claims_of(rows + only_one, "M2")  # wise rows, but none at 0.5
  assert m2.outcome == verdicts.NOT_RUN_OUTCOME and "wise0.5" in m2.note


def _l2sp(test_inv, val_acc, val_inv, acc=0.9):
  """l2sp rows per beta: test invariance, validation accuracy and validation invariance."""
  return [
    _method_row("l2sp", s, test_inv[b] + 0.01 * s, in_acc=acc, beta=b, val_in_acc=val_acc[b], val_invariance=val_inv[b])
    for b in test_inv
    for s in range(3)
  ]


BETAS = (0.001, 0.01, 0.1, 1.0)
VAL_ACC = dict(zip(BETAS, (0.9, 0.89, 0.85, 0.5)))  # plain full's val_in_acc is 0.9: 0.1 and 1 are below the bar
VAL_INV = dict(zip(BETAS, (0.4, 0.6, 0.9, 0.95)))
TEST_INV = dict(zip(BETAS, (0.5, 0.6, 0.7, 0.8)))


def test_m3_judges_l2sp_at_the_beta_chosen_on_validation():
  rows = _plain(full=0.45)
  (m3,) = _claims_of(rows + _l2sp(TEST_INV, VAL_ACC, VAL_INV), "M3")
  assert m3.method_setting == 0.01 and m3.outcome == verdicts.SUPPORTED  # 0.01: best validation off_acc in the bar
  assert m3.rows == "cnn_fc: translate/full l2sp0.01 (best val)@0.01 - translate/full@0.01"
  assert m3.values == pytest.approx([0.6 - 0.45] * 3)
  entry = next(e for e in claims.to_json(claims.evaluate(rows + _l2sp(TEST_INV, VAL_ACC, VAL_INV))) if e["id"] == "M3")
  assert entry["method_setting"] == 0.01 and entry["kind"] == "method"
  worse = {**TEST_INV, 0.01: 0.3}  # beta* loses invariance on test: contradicted, not re-chosen
  (m3,) = _claims_of(rows + _l2sp(worse, VAL_ACC, VAL_INV), "M3")
  assert m3.method_setting == 0.01 and m3.outcome == verdicts.CONTRADICTED
  no_val = [{k: v for k, v in r.items() if k != "val_in_acc"} for r in _l2sp(TEST_INV, VAL_ACC, VAL_INV)]
  (m3,) = _claims_of(rows + no_val, "M3")
  assert m3.outcome == verdicts.NOT_RUN_OUTCOME and "val_in_acc" in m3.note and m3.method_setting is None


def test_without_method_rows_m1_to_m3_are_not_run_and_the_terminal_says_what_runs_them():
  result = claims.evaluate(_forgetting_rows())
  m = [c for c in result if c.kind == "method"]
  assert [c.id for c in m] == ["M1", "M2", "M3"] and {c.outcome for c in m} == {verdicts.NOT_RUN_OUTCOME}
  text = terminal.claims_table(result)
  assert "not run here: M1, M2, M3 (experiment=methods runs" in text
  assert "M1" not in next(line for line in text.splitlines() if "experiment=reproduce" in line)


def test_method_claims_come_after_the_replications_and_before_the_property_checks():
  rows = _plain() + _architecture_rows(fc_twin=False) + [_method_row("lpft", s, 0.6 + 0.01 * s) for s in range(3)]
  result = claims.evaluate(rows)
  sections = [claims.section(c) for c in result]
  assert sections == sorted(sections) and set(sections) == {0, 1, 2}
  md = claims.markdown(result)
  assert md.index("| C6") < md.index("### Fine-tuning methods") < md.index("| M1") < md.index("### Property checks")
  text = terminal.claims_table(result)
  assert text.index("C6") < text.index("fine-tuning methods:") < text.index("M1") < text.index("property checks:")


def _listed_in_text(text: str) -> tuple[Counter, set]:
  """(id, rate, outcome, role) of every claims line of a terminal or leaderboard.md text, and the ids on
  its not-run lines."""
  outcome = {v: k for k, v in verdicts.VERDICT.items()}
  verdict = "|".join(re.escape(v) for v in sorted(outcome, key=len, reverse=True))
  line = re.compile(rf"^\|?\s*(↳ )?([CFM]\d\w*)\s*\|?\s+(\S+)\s*\|?\s+({verdict})(?:\s|\|)")
  found = Counter()
  for m in filter(None, map(line.match, text.splitlines())):
    found[(m.group(2), m.group(3), outcome[m.group(4)], "secondary" if m.group(1) else "primary")] += 1
  not_run = {i for names in re.findall(r"not run here: ([^(]+) \(", text) for i in names.split(", ")}
  return found, not_run


def _listed_in_html(page: str) -> tuple[Counter, set]:
  outcome = {v: k for k, v in verdicts.VERDICT.items()}
  found = Counter()
  for role, cells in re.findall(r"<tr class='(primary|secondary)'>(.*?)</tr>", page):
    cid, lr, verdict = (re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", cells)[:3])
    found[(cid.removeprefix("↳ "), lr, outcome[verdict], role)] += 1
  not_run = {i for names in re.findall(r"not run here: ([^(]+) \(", page) for i in names.split(", ")}
  return found, not_run


def test_the_terminal_leaderboard_md_claims_json_and_index_html_tell_one_story(tmp_path):
  from shiftbench.reporting import page as report
  from shiftbench.rows.schema import format_lr

  rows = _two_rate_rows(test_scratch=(0.05, 0.45))  # C3b@0.01: supported against η*, not at the same rate
  board = leaderboard.write_leaderboard(rows, tmp_path, figures=False)
  entries = json.loads((tmp_path / "claims.json").read_text())
  from_json, json_not_run = Counter(), set()
  for e in entries:
    for x in (e, *e["secondaries"]):
      lr = "-" if x["finetune_lr"] is None else format_lr(x["finetune_lr"])
      from_json[(x["id"], lr, x["outcome"], "primary" if x["primary"] else "secondary")] += 1
  outputs = {
    "terminal": _listed_in_text(terminal.summary(board, tmp_path)),
    "leaderboard.md": _listed_in_text((tmp_path / "leaderboard.md").read_text()),
    "index.html": _listed_in_html(report.render_html(board.columns, board.rows, {}, claims=board.claims)),
  }
  listed = outputs["terminal"][0]
  assert (
    listed[("C3b", "0.01", "supported", "primary")] == 1 and listed[("C3b", "0.01", "equivalent", "secondary")] == 1
  )  # full and scratch at 0.01 are the same numbers: equivalent, inside ±δ
  for name, (found, not_run) in outputs.items():
    assert found == listed and not_run == outputs["terminal"][1], name  # the same lines, the same not-run ids
  # claims.json holds the same entries, with the ones the texts name on their not-run line.
  json_not_run = from_json - listed
  assert +(listed - from_json) == Counter() and {o for _, _, o, _ in json_not_run} == {"not_run"}
  assert {i for i, *_ in json_not_run} == outputs["terminal"][1] == {"C4", "C6", "M1", "M2", "M3", "C5"}
  assert all(e["primary"] and all(not s["primary"] for s in e["secondaries"]) for e in entries)


# Issue 32: endpoints that cannot be gamed, verdicts with a margin, Holm within each claim family.


def _accuracy_rows(arm_acc, seeds=range(5), model="cnn_fc"):
  """Plain translate rows and method rows with in- and off-location accuracy per seed (a spread of 0.004
  per seed on both) and the invariance score they make (chance 0.1): `arm_acc` maps (method, setting) ->
  (in_acc, off_acc); plain rows use ("last", None) and ("full", None)."""
  rows = []
  for (method, setting), (in_acc, off_acc) in arm_acc.items():
    for s in seeds:
      i, o = in_acc + 0.004 * (s % 3), off_acc + 0.004 * ((s + 1) % 3)
      inv = (o - 0.1) / (i - 0.1)
      if method in ("last", "full"):
        rows.append(_row(model, FC, "translate", method, s, inv, in_acc=i, off_acc=o, val_in_acc=i))
      else:
        extra = {"val_in_acc": i, "val_invariance": inv} if method == "l2sp" else {}
        rows.append(_method_row(method, s, o, in_acc=i, invariance=inv, **(extra | {"method_setting": setting})))
  return rows


def test_a_method_that_raises_the_ratio_by_losing_accuracy_is_never_supported():
  # Plain full: 0.95 in, 0.56 off (invariance 0.54). Each method learns B less (0.80 in) and keeps less off
  # the fine-tune location (0.53): its ratio rises to 0.61 while both accuracies fall.
  worse = (0.80, 0.53)
  arms = {("last", None): (0.80, 0.52), ("full", None): (0.95, 0.56), ("lpft", None): worse}
  arms |= {("wise", 0.5): worse, ("wise", 1.0): (0.95, 0.56), ("l2sp", 0.01): worse}
  rows = _accuracy_rows(arms)
  inv = {r["finetune_method"]: r["invariance"] for r in rows if r["seed"] == 0 and "finetune_method" in r}
  plain = [r for r in rows if r["seed"] == 0 and "finetune_method" not in r]
  full = next(r["invariance"] for r in plain if r["finetune"] == "full")
  assert inv["lpft"] > full + 0.05 and inv["l2sp"] > full + 0.05  # the ratio rises ...
  result = claims.evaluate(rows)
  m = {c.id: c for c in result if c.kind == "method"}
  assert set(m) == {"M1", "M2", "M3"} and m["M3"].method_setting == 0.01
  assert not any(c.outcome == verdicts.SUPPORTED for c in m.values()), {c.id: c.outcome for c in m.values()}
  assert {c.outcome for c in m.values()} == {verdicts.CONTRADICTED}  # ... while off_acc falls by 0.03 > δ
  assert all(c.values == pytest.approx([-0.03] * 5) for c in m.values())
  assert "invariance difference +0.0" in m["M1"].note  # the ratio, a secondary number in the note


def test_a_difference_of_0003_with_tiny_variance_is_equivalent_not_contradicted():
  # Issue 32's M3 for gap: β* = 0.001 is practically plain full, -0.003 [-0.005, -0.000] read "contradicted".
  rows = _plain(full_val=0.9)
  for s in range(3):
    full = next(r for r in rows if r["seed"] == s and (r["pretrain"], r["finetune"]) == ("translate", "full"))
    off = full["off_acc"] - 0.003 + 0.0002 * s
    rows.append(_method_row("l2sp", s, off, in_acc=0.9, beta=0.001, val_in_acc=0.9, val_invariance=0.5))
  (m3,) = _claims_of(rows, "M3")
  mean, lo, hi = verdicts.interval(m3.values)
  assert mean == pytest.approx(-0.003, abs=1e-3) and hi < 0  # the whole interval below 0 ...
  assert m3.outcome == verdicts.EQUIVALENT and m3.verdict == "equivalent"  # ... and inside ±δ
  # The same at the level of a rule: a paired difference of -0.003 with tiny spread, and one of -0.03.
  tiny = _sample([-0.003, -0.0031, -0.0029, -0.0030, -0.0032])
  assert verdicts.outcome(tiny, verdicts.ABOVE_ZERO) == verdicts.EQUIVALENT
  assert verdicts.outcome(_sample([-0.03, -0.031, -0.029]), verdicts.ABOVE_ZERO) == verdicts.CONTRADICTED
  assert verdicts.outcome(_sample([0.03, 0.031, 0.029]), verdicts.ABOVE_ZERO) == verdicts.SUPPORTED
  # Beyond 0 but not beyond δ: neither supported nor equivalent.
  assert verdicts.outcome(_sample([0.015, 0.025, 0.02]), verdicts.ABOVE_ZERO) == verdicts.INCONCLUSIVE
  # A collapsed seed blocks equivalence as it blocks support.
  collapsed = verdicts.Sample([0, 1, 2, 3], {0: -0.003, 1: -0.0031, 2: -0.0029})
  assert verdicts.outcome(collapsed, verdicts.ABOVE_ZERO) == verdicts.INCONCLUSIVE
  # C1's threshold is itself a pre-registered size: no margin, no equivalence.
  assert verdicts.outcome(_sample([0.199, 0.1991, 0.1989]), verdicts.Rule("below", 0.2)) == verdicts.SUPPORTED


def test_holm_within_each_claim_family_is_recorded_in_claims_json(tmp_path):
  # C3a (translate/last - translate/full) at two rates: a large effect at 1e-2, and at 1e-3 one whose 95%
  # interval clears δ but whose 97.5% interval does not.
  weak = [0.08, 0.14, 0.11]
  _, lo95, _ = verdicts.interval(weak)
  _, lo975, _ = verdicts.interval(weak, verdicts.ALPHA / 2)
  assert lo95 > verdicts.SMALLEST_EFFECT > lo975  # the data this test needs

  def rows_of(model):
    rows = []
    for lr, gain in ((0.001, weak), (0.01, [0.40, 0.41, 0.42])):
      for s in range(3):
        rows += [
          _row(model, FC, "translate", "last", s, 0.3 + gain[s], lr=lr),
          _row(model, FC, "translate", "full", s, 0.3, lr=lr),
        ]
    return rows

  # One model: a family of two. The large effect is first in Holm's order (α = 0.025 / 2), the weak one
  # second (α = 0.025 / 1: its 95% interval), so both are supported.
  leaderboard.write_leaderboard(rows_of("cnn_fc"), tmp_path, figures=False)
  entries = {(e["id"], e["finetune_lr"]): e for e in json.loads((tmp_path / "claims.json").read_text())}
  big, small = entries[("C3a", 0.01)], entries[("C3a", 0.001)]
  assert big["holm"]["family"] == small["holm"]["family"] == 2
  assert (big["holm"]["rank"], big["holm"]["alpha"]) == (1, pytest.approx(0.0125))
  assert (small["holm"]["rank"], small["holm"]["alpha"]) == (2, pytest.approx(0.025))
  assert small["outcome"] == big["outcome"] == "supported" and small["smallest_effect"] == verdicts.SMALLEST_EFFECT
  assert small["holm"]["ci_judged"] == pytest.approx(small["ci95"])
  assert big["holm"]["p_value"] < small["holm"]["p_value"]
  c1 = entries[("C1", None)]  # a claim whose rows did not run has no Holm level
  assert c1["holm"] is None and c1["outcome"] == "not_run"
  # Two models: one family over models x rates, of four. The weak entries come third and fourth: the third is
  # judged at 0.025 / 2, where it is not decisive, so Holm stops there and both read inconclusive.
  result = claims.evaluate(rows_of("cnn_fc") + rows_of("cnn_fc2"))
  c3a = [c for c in result if c.id == "C3a" and c.primary]
  assert {c.family for c in c3a} == {4} and sorted(c.holm_rank for c in c3a) == [1, 2, 3, 4]
  assert {c.outcome for c in c3a if c.finetune_lr == 0.01} == {verdicts.SUPPORTED}
  assert {c.outcome for c in c3a if c.finetune_lr == 0.001} == {verdicts.INCONCLUSIVE}
  third = next(c for c in c3a if c.holm_rank == 3)
  # The level it was judged at follows the interval (the note, after it: these rows have no per-object data).
  assert third.alpha == pytest.approx(0.0125) and third.effect.split(" (")[0].endswith(" 97.5%")


def test_c3a_also_says_whether_full_fine_tuning_lowers_off_location_accuracy():
  # The ratio falls (in-location accuracy rises more than off-location accuracy) while off_acc rises.
  rows = _accuracy_rows({("last", None): (0.80, 0.52), ("full", None): (0.99, 0.56)})
  c3a = [c for c in claims.evaluate(rows) if c.id == "C3a"]
  primary, secondary = (next(c for c in c3a if c.primary), next(c for c in c3a if not c.primary))
  assert primary.outcome == verdicts.SUPPORTED  # invariance 0.60 -> 0.52: "loses part of it"
  assert secondary.secondary == "off-location accuracy, not the ratio"
  assert secondary.outcome == verdicts.CONTRADICTED and secondary.values == pytest.approx([-0.04] * 5)
  entry = next(e for e in claims.to_json(claims.evaluate(rows)) if e["id"] == "C3a")
  assert [s["entry"] for s in entry["secondaries"]] == ["secondary: off-location accuracy, not the ratio"]
