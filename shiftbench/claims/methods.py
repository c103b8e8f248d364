"""M1-M3: fine-tuning methods that keep what plain full fine-tuning loses, each judged against plain
fine-tuning of the same model, pretrain regime, fine-tune rate η and seed (paired by seed), one claim per
model that has the method's rows and per η, within each protocol group.

The endpoint is off-location accuracy (`off_acc`), paired with in-location accuracy (`in_acc`), as the
methods' papers judge them (accuracy out of distribution): a method "keeps more" only if its off-location
accuracy is higher beyond δ (`verdicts.SMALLEST_EFFECT`) and its in-location accuracy is within a
pre-registered bar of the arm it is compared with (`ACCURACY_BAR`; M2's own `M2_GUARD`), or higher (it
dominates on both, a case of the same test). The invariance ratio (off - chance) / (in - chance) rises
whenever in-location accuracy falls, so it would reward learning less; it is in each entry's note only.

Judged on the `translate` regime only: it is the regime whose pretraining gives new classes invariance to
keep (C2), and the methods' papers are about keeping what pretraining gave. The methods board
(`shiftbench.reporting.methods_board`) shows every non-scratch regime. L2-SP's β* (`best_beta`) is chosen on B's
validation split, never on test; the board marks the same β. The rules: `shiftbench.claims.catalogue`. No jax here.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from shiftbench.claims.arms import Arms, healthy, label, method_arm
from shiftbench.claims.verdicts import (
  ABOVE_ZERO,
  ALPHA,
  CONTRADICTED,
  EQUIVALENT,
  INCONCLUSIVE,
  JUDGED,
  MIN_SEEDS,
  SUPPORTED,
  UNDEFINED_OUTCOME,
  VERDICT,
  Claim,
  Sample,
  Series,
  Test,
  interval,
  judged,
  outcome,
  paired,
)

KIND = "method"  # the claims' kind: shown after the replications, before the property checks
REGIME = "translate"
# How much in-location accuracy a method may give up against plain full and still count: M1's and M3's
# guard (the paired in_acc difference's lower bound above -ACCURACY_BAR), the board's ranking bar (on test)
# and β*'s (on validation).
ACCURACY_BAR = 0.02
M2_GUARD = 0.05  # M2: WiSE-FT at α=0.5 within this much in-location accuracy of α=1 (0.6.0's pre-registration)
ENDPOINT = "off_acc"  # the methods' primary endpoint, paired with in_acc
M2_ALPHA = 0.5
LPFT, WISE, L2SP = "lpft", "wise", "l2sp"
WISE_LPFT, L2SP_DECOUPLED, L2SP_SGD = "wise_lpft", "l2sp_decoupled", "l2sp_sgd"
REPLAY, EWC, SURGICAL, SOUP = "replay", "ewc", "surgical", "soup"
KUMAR = "Kumar et al., ICLR 2022 (arXiv 2202.10054)"
WORTSMAN = "Wortsman et al., CVPR 2022 (arXiv 2109.01903)"
LI = "Li, Grandvalet & Davoine, ICML 2018 (arXiv 1802.01483)"
LOSHCHILOV = "Loshchilov & Hutter, ICLR 2019 (arXiv 1711.05101); Li et al. 2018"
ROLNICK = "Rolnick et al., NeurIPS 2019 (arXiv 1811.11682)"
KIRKPATRICK = "Kirkpatrick et al., PNAS 2017 (arXiv 1612.00796)"
LEE = "Lee et al., ICLR 2023 (arXiv 2210.11466)"
SOUPS = "Wortsman et al., ICML 2022 (arXiv 2203.05482)"
M1 = f"LP-FT keeps more off-location accuracy than plain full fine-tuning, in-location accuracy within {ACCURACY_BAR}"
M2 = f"WiSE-FT at α={M2_ALPHA:g} keeps more off-location accuracy than at α=1, in-location accuracy within {M2_GUARD}"
M3 = (
  "L2-SP under Adam at its validation-chosen β* keeps more off-location accuracy than plain full fine-tuning, "
  f"in-location accuracy within {ACCURACY_BAR}"
)
M2B = (
  f"WiSE-FT from the converged probe to LP-FT at α={M2_ALPHA:g} keeps more off-location accuracy than LP-FT (α=1), "
  f"in-location accuracy within {M2_GUARD}"
)
M3B = (
  "decoupled L2-SP at its validation-chosen β* keeps more off-location accuracy than plain full fine-tuning, "
  f"in-location accuracy within {ACCURACY_BAR}"
)
M3C = (
  "L2-SP under SGD at its validation-chosen β* keeps more off-location accuracy than plain full fine-tuning under "
  f"SGD, in-location accuracy within {ACCURACY_BAR}"
)
M4 = (
  "replay of A at its validation-chosen ρ* keeps more off-location accuracy than plain full fine-tuning, "
  f"in-location accuracy within {ACCURACY_BAR}"
)
M5 = (
  "EWC at its validation-chosen λ* keeps more off-location accuracy than plain full fine-tuning, in-location "
  f"accuracy within {ACCURACY_BAR}"
)
M6 = (
  "surgical fine-tuning (hidden FC layers frozen) keeps more off-location accuracy than plain full fine-tuning, "
  f"in-location accuracy within {ACCURACY_BAR}"
)
M7 = (
  "a uniform soup of plain full over the rates keeps more off-location accuracy than plain full at η, in-location "
  f"accuracy within {ACCURACY_BAR}"
)
M8 = (
  "plain full fine-tuning under SGD keeps more off-location accuracy than under Adam, in-location accuracy "
  f"within {ACCURACY_BAR}"
)
BEST_VAL = "(best val)"
# The methods compared at one setting of their grid, chosen on B's validation split (`best_setting`), and
# the symbol the tables give that setting. L2-SP under SGD is chosen among its β > 0: its β = 0 is the
# plain-SGD arm it is compared with.
CHOSEN = {L2SP: "β*", L2SP_DECOUPLED: "β*", L2SP_SGD: "β*", REPLAY: "ρ*", EWC: "λ*"}


class BestBeta(NamedTuple):
  """A method's validation-chosen setting (L2-SP's β*, replay's ρ*, EWC's λ*) for one model, regime and
  rate; `note` says why none could be chosen (then `beta` is None) or that the fallback chose it (none
  within the bar: `qualified` False). `beta` is the setting, whatever the method's grid is of."""

  beta: float | None
  note: str = ""
  qualified: bool = True


BestSetting = BestBeta


def within_bar(acc: float, plain_full: float) -> bool:
  """`acc` is at most `ACCURACY_BAR` below plain full's (to rounding): a method that keeps invariance by
  not learning B does not count."""
  return acc >= plain_full - ACCURACY_BAR - 1e-9


def mean(values: Series | None) -> float | None:
  """The mean of the defined values (None when the arm did not run or none is defined)."""
  found = [v for v in (values or {}).values() if v is not None]
  return math.fsum(found) / len(found) if found else None


def healthy_mean(values: Series | None, health: Series | None) -> float | None:
  """The mean of `values` over the seeds that did not collapse: whose `health` (the same rows' invariance)
  is defined. A collapsed fine-tune (in-location accuracy not above chance) says nothing about how well
  the arm learns B, and one at chance would pull a mean down by ~0.16 (the digits at 1e-2)."""
  return mean(healthy(values, health))


def best_beta(arms: Arms, model: str, pretrain: str, lr: float | None) -> BestBeta:
  """L2-SP's β* (`best_setting` of `l2sp`)."""
  return best_setting(arms, model, pretrain, lr, L2SP)


def _val_off_acc(arms: Arms, model: str, pretrain: str, method: str, setting: float, lr: float | None) -> Series:
  """Each seed's validation off-location accuracy, from the row's validation invariance and in-location
  accuracy (invariance = (off - chance) / (in - chance)); None where the invariance is undefined."""
  at = lambda metric: arms.method_values(model, pretrain, method, setting, lr, metric) or {}  # noqa: E731
  inv, acc, chance = at("val_invariance"), at("val_in_acc"), at("chance")
  out: Series = {}
  for seed in acc:
    i, a, c = inv.get(seed), acc.get(seed), chance.get(seed)
    out[seed] = None if i is None or a is None or c is None else c + i * (a - c)
  return out


def _baseline_val_in_acc(arms: Arms, model: str, pretrain: str, method: str, lr: float | None) -> float | None:
  """The mean validation in-location accuracy of the arm `method` is compared with, over its healthy seeds:
  plain full's, or for L2-SP under SGD its own β = 0 rows (plain full under SGD)."""
  if method == L2SP_SGD:
    at = lambda metric: arms.method_values(model, pretrain, L2SP_SGD, 0.0, lr, metric)  # noqa: E731
    return healthy_mean(at("val_in_acc"), at("invariance"))
  return healthy_mean(arms.values(model, pretrain, "full", lr, "val_in_acc"), arms.values(model, pretrain, "full", lr))


def best_setting(arms: Arms, model: str, pretrain: str, lr: float | None, method: str) -> BestBeta:
  """A method's validation-chosen setting (pre-registered, never chosen on test numbers): among the
  settings whose rows' mean `val_in_acc` over seeds is within `ACCURACY_BAR` of the compared arm's (plain
  full's; L2-SP under SGD: its β = 0 rows'), the one with the highest mean validation off-location accuracy
  (ties: the smaller setting); if none is within the bar (or the compared arm has no `val_in_acc`), the
  setting with the highest mean `val_in_acc` (ties: the smaller); none (with a note) when no row of the
  method has a `val_in_acc`. The compared arm's mean is over its healthy seeds only (`healthy_mean`). 0.7.0
  chose β* by validation invariance, which rewards learning less (docs/protocol.md)."""
  symbol = CHOSEN.get(method, "setting")
  found = [x.setting for x in arms.methods_at(model, pretrain, lr) if x.method == method and x.setting is not None]
  found = [v for v in found if not (method == L2SP_SGD and v == 0)]
  if not found:
    return BestBeta(None, f"{model}: no {method} rows" + (" with β > 0" if method == L2SP_SGD else ""))
  acc = {v: mean(arms.method_values(model, pretrain, method, v, lr, "val_in_acc")) for v in found}
  acc = {v: a for v, a in acc.items() if a is not None}
  if not acc:
    return BestBeta(None, f"{model}: no val_in_acc in the {method} rows to choose {symbol} by")
  base = _baseline_val_in_acc(arms, model, pretrain, method, lr)
  qualified = [v for v in acc if base is not None and within_bar(acc[v], base)]
  if qualified:
    off = {v: mean(_val_off_acc(arms, model, pretrain, method, v, lr)) for v in qualified}
    return BestBeta(max(qualified, key=lambda v: (-math.inf if off[v] is None else off[v], -v)))
  value = max(acc, key=lambda v: (acc[v], -v))
  arm = "plain full under SGD" if method == L2SP_SGD else "plain full"
  why = f"{arm} has no val_in_acc" if base is None else f"no {symbol[0]} within {ACCURACY_BAR} of {arm}'s val_in_acc"
  return BestBeta(value, f"{why}: {symbol} has the highest val_in_acc", qualified=False)


def claims(arms: Arms) -> list[Claim]:
  """M1, M2 and M3 for every model with the method's `translate` rows, at each rate they ran at (one
  not-run claim of each where none did)."""
  core = (
    _each(arms, LPFT, _lpft, "M1", M1, KUMAR)
    + _each(arms, WISE, _wise, "M2", M2, WORTSMAN)
    + _each(arms, L2SP, _l2sp, "M3", M3, LI)
  )
  # The controls (issue 32): judged only where their rows ran, so a run without them lists no placeholder.
  controls = [
    (WISE_LPFT, _wise_along),
    (L2SP_DECOUPLED, lambda a, m, lr: _chosen(a, m, lr, L2SP_DECOUPLED, "M3b", M3B, LOSHCHILOV)),
    (L2SP_SGD, lambda a, m, lr: _chosen(a, m, lr, L2SP_SGD, "M3c", M3C, LI)),
    (REPLAY, lambda a, m, lr: _chosen(a, m, lr, REPLAY, "M4", M4, ROLNICK)),
    (EWC, lambda a, m, lr: _chosen(a, m, lr, EWC, "M5", M5, KIRKPATRICK)),
    (SURGICAL, lambda a, m, lr: _single(a, m, lr, SURGICAL, "M6", M6, LEE)),
    (SOUP, lambda a, m, lr: _single(a, m, lr, SOUP, "M7", M7, SOUPS)),
    (L2SP_SGD, _optimiser),
  ]
  for method, claim in controls:
    core += _each(arms, method, claim, "", "", "", placeholder=False)
  return core


def _each(arms: Arms, method: str, claim, cid: str, text: str, citation: str, placeholder: bool = True) -> list[Claim]:
  models = dict.fromkeys(c.model for c in arms.method_cells() if arms.method_rates(c.model, REGIME, method))
  out = [claim(arms, m, lr) for m in models for lr in arms.method_rates(m, REGIME, method)]
  if out or not placeholder:
    return out
  compared = f"(no {method} rows): {method_arm(REGIME, method, None, None)} - {REGIME}/full"
  return [judged(cid, text, citation, compared, None, ABOVE_ZERO, kind=KIND)]


def _plain_full(lr: float | None) -> str:
  return label(REGIME, "full", lr)


class Side(NamedTuple):
  """One side of a method claim: how to read a metric of its rows (None where they did not run)."""

  label: str
  at: Any  # metric -> Series | None

  def endpoint(self) -> Series | None:
    return healthy(self.at(ENDPOINT), self.at("invariance"))


def _keeps_more(cid: str, text: str, citation: str, a: Side, b: Side, bar: float, m: str, **fields) -> Claim:
  """`a` keeps more off-location accuracy than `b`, at in-location accuracy within `bar`: the paired
  off_acc difference a - b judged by the difference rule (beyond +δ; a collapsed seed counts against),
  with a guard on the paired in_acc difference d, each on its interval at the entry's level α:

    contradicted  off_acc contradicted (below -δ), or d's upper bound < -bar (it certainly gives up more);
    supported     off_acc supported and d's lower bound > -bar (within the bar, or dominating on both);
    equivalent    off_acc equivalent (inside ±δ) and not contradicted;
    inconclusive  otherwise.
  The note holds d's interval and, secondary, the invariance difference."""
  compared = f"{m}: {a.label} - {b.label}"
  off = paired(a.endpoint(), b.endpoint())
  acc, inv = paired(a.at("in_acc"), b.at("in_acc")), paired(a.at("invariance"), b.at("invariance"))
  claim = judged(cid, text, citation, compared, off, ABOVE_ZERO, kind=KIND, model=m, **fields)
  if claim.outcome not in JUDGED:
    return claim
  if acc is None or len(acc.values) < MIN_SEEDS:
    claim.outcome, claim.note = UNDEFINED_OUTCOME, "in_acc undefined: the accuracy guard cannot be judged"
    claim.verdict, claim.test = VERDICT[claim.outcome], None
    return claim

  def decide(alpha: float) -> str:
    endpoint = outcome(off, ABOVE_ZERO, alpha)
    _, lo, hi = interval(acc.values, alpha, acc.se_obj)
    if endpoint == CONTRADICTED or hi < -bar:
      return CONTRADICTED
    if endpoint == SUPPORTED and lo > -bar:
      return SUPPORTED
    return EQUIVALENT if endpoint == EQUIVALENT else INCONCLUSIVE

  def explain(alpha: float) -> str:
    d, lo, hi = interval(acc.values, alpha, acc.se_obj)
    text = f"in_acc difference {d:+.3f} [{lo:+.3f}, {hi:+.3f}], guard: > -{bar}"
    return text + _secondary(inv, alpha)

  claim.test = Test(decide, explain, claim.note)
  claim.outcome = decide(ALPHA)
  claim.verdict, claim.note = VERDICT[claim.outcome], "; ".join(t for t in (claim.note, explain(ALPHA)) if t)
  return claim


def _secondary(inv: Sample | None, alpha: float) -> str:
  """The invariance difference, a secondary endpoint: `; invariance difference +0.195 [+0.135, +0.254]`."""
  values = [] if inv is None else inv.values
  if len(values) < 2:
    return ""
  d, lo, hi = interval(values, alpha, inv.se_obj)
  return f"; invariance difference {d:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _plain_arm(arms: Arms, m: str, lr: float | None, label_text: str | None = None) -> Side:
  return Side(label_text or _plain_full(lr), lambda metric: arms.values(m, REGIME, "full", lr, metric))


def _method(arms: Arms, m: str, method: str, setting: float | None, lr: float | None, note: str = "") -> Side:
  at = lambda metric: arms.method_values(m, REGIME, method, setting, lr, metric)  # noqa: E731
  return Side(method_arm(REGIME, method, setting, lr, note), at)


def _lpft(arms: Arms, m: str, lr: float | None) -> Claim:
  """M1(η): lpft@η against plain full@η (`_keeps_more`, bar `ACCURACY_BAR`)."""
  a, b = _method(arms, m, LPFT, None, lr), _plain_arm(arms, m, lr)
  return _keeps_more("M1", M1, KUMAR, a, b, ACCURACY_BAR, m, finetune_lr=lr)


def _setting(arms: Arms, m: str, method: str, lr: float | None, want: float) -> float | None:
  """The setting of `method`'s rows equal to `want` (as read from a results file), or None."""
  found = [x.setting for x in arms.methods_at(m, REGIME, lr) if x.method == method and x.setting is not None]
  return next((s for s in found if math.isclose(s, want)), None)


def _wise(arms: Arms, m: str, lr: float | None) -> Claim:
  """M2(η): wise0.5@η against wise1@η (plain full where no α=1 rows ran: it is exactly α=1)."""
  end = _plain_arm(arms, m, lr, f"{_plain_full(lr)} (plain full: exactly α=1)")
  return _half_against_end(arms, m, lr, WISE, end, "M2", M2)


def _half_against_end(arms: Arms, m: str, lr: float | None, method: str, end: Side, cid: str, text: str) -> Claim:
  """A WiSE-FT path at α=0.5 against its α=1 rows (`end` where none ran: the rows α=1 is exactly), by
  `_keeps_more` with the bar `M2_GUARD`."""
  half, one = _setting(arms, m, method, lr, M2_ALPHA), _setting(arms, m, method, lr, 1.0)
  b = end if one is None else _method(arms, m, method, one, lr)
  if half is None:
    a = Side(method_arm(REGIME, method, M2_ALPHA, lr), lambda metric: None)
    fields = {"note": f"no {method}{M2_ALPHA:g} rows"}
  else:
    a, fields = _method(arms, m, method, half, lr), {}
  return _keeps_more(cid, text, WORTSMAN, a, b, M2_GUARD, m, finetune_lr=lr, method_setting=M2_ALPHA, **fields)


def _l2sp(arms: Arms, m: str, lr: float | None) -> Claim:
  """M3(η): l2sp at β*(η) against plain full@η (`_chosen`)."""
  return _chosen(arms, m, lr, L2SP, "M3", M3, LI)


def _wise_along(arms: Arms, m: str, lr: float | None) -> Claim:
  """M2b(η): wise_lpft0.5@η against wise_lpft1@η (LP-FT where no α=1 rows ran: it is exactly α=1)."""
  end = _method(arms, m, LPFT, None, lr, "(LP-FT: exactly α=1)")
  return _half_against_end(arms, m, lr, WISE_LPFT, end, "M2b", M2B)


def _chosen(arms: Arms, m: str, lr: float | None, method: str, cid: str, text: str, citation: str) -> Claim:
  """A method at its validation-chosen setting (`best_setting`) against plain full@η (L2-SP under SGD:
  against its own β = 0 rows, plain full under SGD), by `_keeps_more` with the bar `ACCURACY_BAR`."""
  best = best_setting(arms, m, REGIME, lr, method)
  if best.beta is None:
    a = Side(method_arm(REGIME, method, None, lr, BEST_VAL), lambda metric: None)
  else:
    a = _method(arms, m, method, best.beta, lr, BEST_VAL)
  b = _method(arms, m, L2SP_SGD, 0.0, lr, "(plain SGD)") if method == L2SP_SGD else _plain_arm(arms, m, lr)
  fields = {"finetune_lr": lr, "method_setting": best.beta, "note": best.note}
  return _keeps_more(cid, text, citation, a, b, ACCURACY_BAR, m, **fields)


def _single(arms: Arms, m: str, lr: float | None, method: str, cid: str, text: str, citation: str) -> Claim:
  """A method with one row per seed (no grid) against plain full@η, by `_keeps_more` with the bar
  `ACCURACY_BAR`."""
  a, b = _method(arms, m, method, None, lr), _plain_arm(arms, m, lr)
  return _keeps_more(cid, text, citation, a, b, ACCURACY_BAR, m, finetune_lr=lr)


def _optimiser(arms: Arms, m: str, lr: float | None) -> Claim:
  """M8(η): plain full under SGD (L2-SP under SGD at β = 0) against plain full under Adam@η: how much of
  what plain full loses is the optimiser's, by `_keeps_more` with the bar `ACCURACY_BAR`."""
  zero = _setting(arms, m, L2SP_SGD, lr, 0.0)
  if zero is None:
    a = Side(method_arm(REGIME, L2SP_SGD, 0.0, lr), lambda metric: None)
    fields = {"note": f"no {L2SP_SGD} β = 0 rows"}
  else:
    a, fields = _method(arms, m, L2SP_SGD, zero, lr, "(plain SGD)"), {}
  b = _plain_arm(arms, m, lr)
  return _keeps_more("M8", M8, LI, a, b, ACCURACY_BAR, m, finetune_lr=lr, method_setting=0.0, **fields)
