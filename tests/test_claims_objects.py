"""The test set's sampling error in the claims: each row's per-object results (what its accuracies are the
means of), the bootstrap over objects against its closed form, and paired differences whose interval now
carries it (or, for rows without per-object results, says it does not)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from shiftbench.claims import catalogue as claims
from shiftbench.claims import objects, verdicts
from shiftbench.reporting import methods_board
from shiftbench.rows import per_object

GOLDEN = Path(__file__).resolve().parent / "golden"
FC = {"_target_": "shiftbench.models.ShiftNet", "widths": [8, 16], "head": "fc", "fc_hidden": [256, 256]}
LR, CHANCE, N_OFF = 0.01, 0.1, 8


def test_a_rows_accuracies_are_the_means_of_its_per_object_results():
  """The golden rows (a real tiny run, pinned by test_golden_rows): in_acc and off_acc recomputed from
  `per_object` equal the row's, to float32 rounding."""
  (path,) = GOLDEN.glob("rows_protocol_*.json")
  rows = json.loads(path.read_text())["rows"]
  gaps = []
  for r in rows:
    p = per_object.of(r)
    assert p is not None and p.objects == r["test_objects"] and p.off_locations == np.size(r["location_map"]["acc"]) - 1
    gaps += [abs(p.off_acc() - r["off_acc"]), abs(p.in_acc() - r["in_acc"])]
  assert max(gaps) < 1e-6, f"largest difference {max(gaps):.2e}"


def _row(seed, off_correct, in_correct, method="plain", finetune="full", **extra):
  """A translate row of cnn_fc whose accuracies and invariance are those of its per-object results."""
  off_correct, in_correct = np.asarray(off_correct), np.asarray(in_correct)
  p = per_object.PerObject(off_correct, in_correct, N_OFF)
  off, at = p.off_acc(), p.in_acc()
  row = {
    "model": "cnn_fc",
    "architecture": FC,
    "pretrain": "translate",
    "finetune": finetune,
    "finetune_lr": LR,
    "seed": seed,
    "in_acc": at,
    "off_acc": off,
    "invariance": (off - CHANCE) / (at - CHANCE),
    "chance": CHANCE,
    "test_objects": len(off_correct),
    "eval_split": "test",
    "datasets": "A -> B",
    "per_object": per_object.record(off_correct, in_correct, N_OFF),
    **extra,
  }
  return row if method == "plain" else {**row, "finetune_method": method, "method_setting": None}


def _m1_rows(n, improved, gain, off, seeds=(0, 1, 2)):
  """Plain full and LP-FT on `n` objects: LP-FT is the same per object but for `improved` objects, each
  right at `gain` more off-location points; seed s moves object s's count by one in both arms, so the
  paired difference is the same on every seed (no seed spread at all)."""
  at = np.ones(n, int)
  at[: n // 10] = 0  # in_acc 0.9 in both arms
  rows = []
  for s in seeds:
    plain = np.array(off)
    plain[s] = max(plain[s] - 1, 0)
    lpft = plain.copy()
    lpft[improved] += gain
    rows += [_row(s, plain, at), _row(s, lpft, at, method="lpft")]
  return rows


def _m1(rows):
  (m1,) = [c for c in claims.evaluate(rows) if c.id == "M1"]
  return m1


def test_a_gain_that_few_objects_carry_is_no_longer_supported():
  # 20 objects, 8 off-location points: one object right at 5 more of them is +5/160 = +0.031 off_acc on
  # every seed. The seeds agree exactly, so the seed interval alone is [+0.031, +0.031]: supported; but which
  # 20 objects were drawn decides it (se ≈ 0.625 · sqrt(0.05 · 0.95 / 20) = 0.030).
  off = np.array([N_OFF] * 10 + [0] * 10)
  m1 = _m1(_m1_rows(20, [10], 5, off))
  assert m1.values == pytest.approx([5 / 160] * 3)
  assert verdicts.interval(m1.values)[1] == pytest.approx(5 / 160)  # the seeds' interval: supported before
  assert m1.se_obj == pytest.approx(0.625 * math.sqrt(0.05 * 0.95 / 20), rel=0.06), m1.se_obj
  assert m1.outcome == verdicts.INCONCLUSIVE, (m1.outcome, m1.effect)
  entry = next(e for e in claims.to_json([m1]) if e["id"] == "M1")
  assert entry["se_obj"] == m1.se_obj and entry["ci95"][0] < verdicts.SMALLEST_EFFECT < entry["ci95"][1]
  assert "sampling error not included" not in m1.note


def test_a_gain_spread_over_many_objects_stays_supported():
  # 2000 objects, 480 of them right at one more off-location point: +480/16000 = +0.03, se ≈ 0.0012.
  rng = np.random.default_rng(0)
  off = rng.integers(0, N_OFF, 2000)  # below N_OFF: room for one more
  m1 = _m1(_m1_rows(2000, np.arange(100, 580), 1, off))
  assert m1.values == pytest.approx([0.03] * 3)
  assert m1.se_obj == pytest.approx(0.125 * math.sqrt(0.24 * 0.76 / 2000), rel=0.06), m1.se_obj
  assert m1.outcome == verdicts.SUPPORTED, (m1.outcome, m1.effect)
  mean, lo, hi = verdicts.interval(m1.values, verdicts.ALPHA, m1.se_obj)
  assert lo == pytest.approx(0.03 - 1.959964 * m1.se_obj) and f"[{lo:+.3f}, {hi:+.3f}]" in m1.effect
  assert "in_acc difference +0.000 [+0.000, +0.000]" in m1.note  # the guard: the same objects right at p_ft


def test_rows_without_per_object_results_keep_the_seed_interval_and_say_so():
  rng = np.random.default_rng(0)
  rows = _m1_rows(2000, np.arange(100, 580), 1, rng.integers(0, N_OFF, 2000), seeds=range(4))
  for r in rows:  # a spread over seeds, so the seed interval has a width to compare
    r["off_acc"] += 0.002 * r["seed"] * (r.get("finetune_method") == "lpft")
  with_objects = _m1(rows)
  for r in rows:
    del r["per_object"]  # rows an older version wrote
  m1 = _m1(rows)
  assert m1.se_obj is None and objects.NO_ROWS_DATA in m1.note and objects.NO_ROWS_DATA in m1.effect
  entry = next(e for e in claims.to_json([m1]) if e["id"] == "M1")
  assert entry["se_obj"] is None and entry["ci95"] == list(verdicts.interval(m1.values)[1:])  # today's interval
  assert m1.values == with_objects.values and with_objects.se_obj > 0
  wide = verdicts.interval(m1.values, verdicts.ALPHA, with_objects.se_obj)
  assert wide[1] < entry["ci95"][0] and entry["ci95"][1] < wide[2]
  # A difference read off plain numbers (no rows behind them) says nothing of objects either way.
  sample = verdicts.paired({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.4, 1: 0.5, 2: 0.6})
  assert sample.se_obj is None and sample.objects_note == ""


def test_the_bootstrap_se_of_one_seeds_0_1_differences_is_their_sd_over_sqrt_n():
  rng = np.random.default_rng(1)
  n = 400
  a, b = (rng.random(n) < 0.7).astype(int), (rng.random(n) < 0.6).astype(int)
  rows = [_row(0, np.zeros(n, int), a), _row(0, np.zeros(n, int), b, finetune="last")]
  replicates = objects.Replicates(rows)
  one = lambda r: objects.Measured({0: r["in_acc"]}, "in_acc", {0: r}, replicates)  # noqa: E731
  se = objects.paired_error(one(rows[0]), one(rows[1]), [0]).se
  closed = float(np.std(a - b) / math.sqrt(n))  # the plug-in (ddof 0) sd: what resampling the objects draws from
  assert abs(se - closed) < 0.06 * closed, f"bootstrap {se:.5f}, closed form {closed:.5f}"
  assert objects.paired_error(one(rows[0]), one(rows[1]), [0]).se == se  # a fixed draw: the same every time


def test_paired_c_claims_carry_it_and_arms_on_other_objects_do_not():
  rng = np.random.default_rng(2)
  rows = []
  for s in range(3):
    at = (rng.random(300) < 0.95).astype(int)
    rows += [
      _row(s, rng.integers(4, N_OFF + 1, 300), at, finetune="last"),
      _row(s, rng.integers(0, 5, 300), at, finetune="full"),
    ]
  c3a = {c.secondary: c for c in claims.evaluate(rows) if c.id == "C3a"}
  assert set(c3a) == {"", "off-location accuracy, not the ratio"}
  assert all(c.se_obj is not None and c.se_obj > 0 for c in c3a.values()), {k: c.se_obj for k, c in c3a.items()}
  assert c3a[""].outcome == verdicts.SUPPORTED  # a large effect stays supported
  for r in rows:
    if r["finetune"] == "last":
      r["eval_split"] = "validation"  # the same count of objects, but another split's
  c3a = next(c for c in claims.evaluate(rows) if c.id == "C3a" and c.primary)
  assert c3a.se_obj is None and objects.NOT_SAME_OBJECTS in c3a.note


def test_the_methods_boards_off_gain_carries_the_same_test_set_error_as_claim_m1():
  off = np.array([N_OFF] * 10 + [0] * 10)
  rows = _m1_rows(20, [10], 5, off)  # +0.031 on every seed, carried by one object of 20 (above)
  for r in rows:
    r["protocol_key"], r["comparison_key"] = "k", f"k-{r.get('finetune_method', 'plain')}"

  def gain(rows):
    (table,) = methods_board.tables(rows)
    return table.line("lpft").off_gain

  m1 = _m1(rows)
  entry = next(e for e in claims.to_json([m1]) if e["id"] == "M1")
  widened = gain(rows)
  assert m1.se_obj > 0.02 and [widened.lo, widened.hi] == pytest.approx(entry["ci95"])
  assert widened.lo < verdicts.SMALLEST_EFFECT  # so the board no longer marks it as keeping more
  for r in rows:
    del r["per_object"]
  seeds_only = gain(rows)
  assert (seeds_only.lo, seeds_only.hi) == pytest.approx((5 / 160, 5 / 160))
