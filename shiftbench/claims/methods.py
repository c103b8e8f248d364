"""M1-M3: fine-tuning methods that keep the invariance plain full fine-tuning loses, each judged against
plain fine-tuning of the same model, pretrain regime, fine-tune rate η and seed (paired by seed), one claim
per model that has the method's rows and per η, within each protocol group.

Judged on the `translate` regime only: it is the regime whose pretraining gives new classes invariance to
keep (C2), and the methods' papers are about keeping what pretraining gave. The methods board
(`shiftbench.reporting.methods_board`) shows every non-scratch regime. L2-SP's β* (`best_beta`) is chosen on B's
validation split, never on test; the board marks the same β. The rules: `shiftbench.claims.catalogue`. No jax here.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from shiftbench.claims.arms import Arms, label, method_arm
from shiftbench.claims.verdicts import (
  ABOVE_ZERO,
  CONTRADICTED,
  INCONCLUSIVE,
  MIN_SEEDS,
  SUPPORTED,
  UNDEFINED_OUTCOME,
  VERDICT,
  Claim,
  Series,
  interval,
  judged,
  paired,
)

KIND = "method"  # the claims' kind: shown after the replications, before the property checks
REGIME = "translate"
# How much in-location accuracy a method may give up against plain full and still count: the board's
# ranking bar (on test) and β*'s (on validation).
ACCURACY_BAR = 0.02
M2_GUARD = 0.05  # M2: WiSE-FT at α=0.5 within this much in-location accuracy of α=1
M2_ALPHA = 0.5
LPFT, WISE, L2SP = "lpft", "wise", "l2sp"
KUMAR = "Kumar et al., ICLR 2022 (arXiv 2202.10054)"
WORTSMAN = "Wortsman et al., CVPR 2022 (arXiv 2109.01903)"
LI = "Li, Grandvalet & Davoine, ICML 2018 (arXiv 1802.01483)"
M1 = "LP-FT keeps more invariance than plain full fine-tuning"
M2 = f"WiSE-FT at α={M2_ALPHA:g} keeps more invariance than at α=1, in-location accuracy within {M2_GUARD}"
M3 = "L2-SP at its validation-chosen β* keeps more invariance than plain full fine-tuning"
BEST_VAL = "(best val)"


class BestBeta(NamedTuple):
  """L2-SP's β* for one model, regime and rate; `note` says why none could be chosen (then `beta` is
  None) or that the fallback chose it (no β within the bar: `qualified` False)."""

  beta: float | None
  note: str = ""
  qualified: bool = True


def within_bar(acc: float, plain_full: float) -> bool:
  """`acc` is at most `ACCURACY_BAR` below plain full's (to rounding): a method that keeps invariance by
  not learning B does not count."""
  return acc >= plain_full - ACCURACY_BAR - 1e-9


def mean(values: Series | None) -> float | None:
  """The mean of the defined values (None when the arm did not run or none is defined)."""
  found = [v for v in (values or {}).values() if v is not None]
  return math.fsum(found) / len(found) if found else None


def best_beta(arms: Arms, model: str, pretrain: str, lr: float | None) -> BestBeta:
  """β* (pre-registered, never chosen on test numbers): among the β whose l2sp rows' mean `val_in_acc`
  over seeds is within `ACCURACY_BAR` of plain full's (same model, regime and rate), the one with the
  highest mean `val_invariance` (ties: the smaller β); if none is within the bar (or plain full has no
  `val_in_acc`), the β with the highest mean `val_in_acc` (ties: the smaller); none (with a note) when no
  l2sp row has a `val_in_acc`."""
  betas = [x.setting for x in arms.methods_at(model, pretrain, lr) if x.method == L2SP and x.setting is not None]
  if not betas:
    return BestBeta(None, f"{model}: no l2sp rows")
  val = lambda b, metric: mean(arms.method_values(model, pretrain, L2SP, b, lr, metric))  # noqa: E731
  acc = {b: val(b, "val_in_acc") for b in betas}
  acc = {b: a for b, a in acc.items() if a is not None}
  if not acc:
    return BestBeta(None, f"{model}: no val_in_acc in the l2sp rows to choose β by")
  full = mean(arms.values(model, pretrain, "full", lr, "val_in_acc"))
  qualified = [b for b in acc if full is not None and within_bar(acc[b], full)]
  if qualified:
    inv = {b: val(b, "val_invariance") for b in qualified}
    return BestBeta(max(qualified, key=lambda b: (-math.inf if inv[b] is None else inv[b], -b)))
  beta = max(acc, key=lambda b: (acc[b], -b))
  why = "plain full has no val_in_acc" if full is None else f"no β within {ACCURACY_BAR} of plain full's val_in_acc"
  return BestBeta(beta, f"{why}: β* has the highest val_in_acc", qualified=False)


def claims(arms: Arms) -> list[Claim]:
  """M1, M2 and M3 for every model with the method's `translate` rows, at each rate they ran at (one
  not-run claim of each where none did)."""
  return (
    _each(arms, LPFT, _lpft, "M1", M1, KUMAR)
    + _each(arms, WISE, _wise, "M2", M2, WORTSMAN)
    + _each(arms, L2SP, _l2sp, "M3", M3, LI)
  )


def _each(arms: Arms, method: str, claim, cid: str, text: str, citation: str) -> list[Claim]:
  models = dict.fromkeys(c.model for c in arms.method_cells() if arms.method_rates(c.model, REGIME, method))
  out = [claim(arms, m, lr) for m in models for lr in arms.method_rates(m, REGIME, method)]
  compared = f"(no {method} rows): {method_arm(REGIME, method, None, None)} - {REGIME}/full"
  return out or [judged(cid, text, citation, compared, None, ABOVE_ZERO, kind=KIND)]


def _plain_full(lr: float | None) -> str:
  return label(REGIME, "full", lr)


def _lpft(arms: Arms, m: str, lr: float | None) -> Claim:
  """M1(η): lpft@η - plain full@η > 0."""
  sample = paired(arms.method_values(m, REGIME, LPFT, None, lr), arms.values(m, REGIME, "full", lr))
  compared = f"{m}: {method_arm(REGIME, LPFT, None, lr)} - {_plain_full(lr)}"
  return judged("M1", M1, KUMAR, compared, sample, ABOVE_ZERO, kind=KIND, model=m, finetune_lr=lr)


def _setting(arms: Arms, m: str, method: str, lr: float | None, want: float) -> float | None:
  """The setting of `method`'s rows equal to `want` (as read from a results file), or None."""
  found = [x.setting for x in arms.methods_at(m, REGIME, lr) if x.method == method and x.setting is not None]
  return next((s for s in found if math.isclose(s, want)), None)


def _wise(arms: Arms, m: str, lr: float | None) -> Claim:
  """M2(η): wise0.5@η - wise1@η > 0 on invariance (plain full where no α=1 rows ran: it is exactly α=1),
  with the accuracy guard on in_acc(wise0.5) - in_acc(wise1): supported only if the invariance outcome
  is supported and the guard's lower bound > -M2_GUARD; contradicted if the invariance outcome is
  contradicted or the guard's upper bound < -M2_GUARD; otherwise inconclusive."""
  half, one = _setting(arms, m, WISE, lr, M2_ALPHA), _setting(arms, m, WISE, lr, 1.0)

  def at(alpha: float | None, metric: str) -> Series | None:
    if alpha is None:
      return None
    return arms.method_values(m, REGIME, WISE, alpha, lr, metric)

  if one is not None:
    against, other = method_arm(REGIME, WISE, one, lr), lambda metric: at(one, metric)
  else:
    against = f"{_plain_full(lr)} (plain full: exactly α=1)"
    other = lambda metric: arms.values(m, REGIME, "full", lr, metric)  # noqa: E731
  compared = f"{m}: {method_arm(REGIME, WISE, M2_ALPHA, lr)} - {against}"
  fields: dict[str, Any] = {"kind": KIND, "model": m, "finetune_lr": lr, "method_setting": M2_ALPHA}
  if half is None:
    fields["note"] = f"no wise{M2_ALPHA:g} rows"
  claim = judged(
    "M2", M2, WORTSMAN, compared, paired(at(half, "invariance"), other("invariance")), ABOVE_ZERO, **fields
  )
  if claim.outcome not in (SUPPORTED, CONTRADICTED, INCONCLUSIVE):
    return claim
  acc = paired(at(half, "in_acc"), other("in_acc"))
  if acc is None or len(acc.values) < MIN_SEEDS:
    claim.outcome, claim.note = UNDEFINED_OUTCOME, "in_acc undefined: the accuracy guard cannot be judged"
  else:
    d, lo, hi = interval(acc.values)
    claim.note = f"in_acc difference {d:+.3f} [{lo:+.3f}, {hi:+.3f}], guard: > -{M2_GUARD}"
    if claim.outcome == CONTRADICTED or hi < -M2_GUARD:
      claim.outcome = CONTRADICTED
    elif claim.outcome == SUPPORTED and lo > -M2_GUARD:
      claim.outcome = SUPPORTED
    else:
      claim.outcome = INCONCLUSIVE
  claim.verdict = VERDICT[claim.outcome]
  return claim


def _l2sp(arms: Arms, m: str, lr: float | None) -> Claim:
  """M3(η): l2sp at β*(η) - plain full@η > 0."""
  best = best_beta(arms, m, REGIME, lr)
  compared = f"{m}: {method_arm(REGIME, L2SP, best.beta, lr, BEST_VAL)} - {_plain_full(lr)}"
  sample = None
  if best.beta is not None:
    sample = paired(arms.method_values(m, REGIME, L2SP, best.beta, lr), arms.values(m, REGIME, "full", lr))
  fields = {"kind": KIND, "model": m, "finetune_lr": lr, "method_setting": best.beta, "note": best.note}
  return judged("M3", M3, LI, compared, sample, ABOVE_ZERO, **fields)
