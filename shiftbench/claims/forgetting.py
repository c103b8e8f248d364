"""C1-C3 and F1 (Biscione & Bowers 2021), for every FC-head model: the claims about what pretraining
transfers to new classes and what fine-tuning at one location loses. Each comparison at a fine-tune rate
η is one claim per η; the scratch arm is at its best validation rate η* (and, for C2 and C3b, also at η:
`scratch_at="same_rate"`). The rule and the thresholds: `shiftbench.claims.catalogue`.
"""

from __future__ import annotations

import dataclasses

from shiftbench.claims.arms import SCRATCH, Arms, Best, fc_head, healthy, label, scratch_label
from shiftbench.claims.verdicts import (
  ABOVE_ZERO,
  FIGURE_OUTCOME,
  UNDEFINED_OUTCOME,
  VERDICT,
  Claim,
  Rule,
  Sample,
  Series,
  judged,
  paired,
  single,
)

BB = "Biscione & Bowers, JMLR 2021"
NEAR_CHANCE = 0.2  # C1: "near chance off-location" = invariance score below a fifth of the way to in-location
TRANSLATE_LAST, TRANSLATE_FULL = ("translate", "last"), ("translate", "full")
FIXED_LAST, CROP_LAST = ("fixed", "last"), ("random_crop", "last")

C2 = "translate pretraining, FC layers kept: new classes gain invariance"
C3B = "... yet stays above training from scratch"
SAME_RATE = "scratch at the same rate"  # what C2's and C3b's secondary entries vary against the primary
OFF_ACC = "off-location accuracy, not the ratio"  # what C3a's secondary entry varies


def claims(arms: Arms) -> list[Claim]:
  """C1-C3b and F1 for every FC-head model of the group (one set of not-run claims if it has none)."""
  out = []
  for m in arms.where(fc_head):
    out += [dataclasses.replace(c, model=m) for c in _Model(arms, m).claims()]
  return out or _Model(arms, "(no FC-head model)").claims()


class _Model:
  """One FC-head model's arms: scratch at η*, every other arm at each rate it ran at."""

  def __init__(self, arms: Arms, m: str):
    self.arms, self.m = arms, m
    self.scratch, self.best = arms.scratch(m)
    rate = None if self.best.note else self.best.rate
    self.at_best = {
      "scratch_lr": rate,
      "scratch_lrs": {m: rate},
      "scratch_at": "best_validation",
      "note": self.best.note,
    }

  def at(self, arm: tuple[str, str], lr: float | None, metric: str = "invariance") -> Series | None:
    return self.arms.values(self.m, *arm, lr, metric)

  def claims(self) -> list[Claim]:
    m, sl = self.m, scratch_label(self.best)
    near = Rule("below", NEAR_CHANCE)
    c1 = f"CNN+FC trained from scratch at one location is near chance elsewhere (invariance < {NEAR_CHANCE})"
    out = [judged("C1", c1, BB, f"{m}: {sl}", single(self.scratch), near, **self.at_best)]
    out += self.against_scratch("C2", C2, TRANSLATE_LAST)
    out += self.at_rates("C2c", "control: pretraining at one location (fixed) gives less than translate", FIXED_LAST)
    out += [self.share(lr) for lr in _rates(self.arms, m, TRANSLATE_LAST, CROP_LAST)]
    c3a = "full fine-tuning at one location loses part of the invariance"
    out += self.at_rates("C3a", c3a, TRANSLATE_FULL)
    out += self.off_location("C3a", c3a, TRANSLATE_FULL)
    out += self.against_scratch("C3b", C3B, TRANSLATE_FULL)
    return out

  def against_scratch(self, cid: str, text: str, arm: tuple[str, str]) -> list[Claim]:
    """arm@η - scratch@η* for each η (primary), and arm@η - scratch@η (`same_rate`, secondary)."""
    out = []
    for lr in _rates(self.arms, self.m, arm):
      a = f"{self.m}: {label(*arm, lr)}"
      best = paired(self.at(arm, lr), self.scratch)
      out.append(
        judged(cid, text, BB, f"{a} - {scratch_label(self.best)}", best, ABOVE_ZERO, finetune_lr=lr, **self.at_best)
      )
      same = paired(self.at(arm, lr), self.at(SCRATCH, lr))
      fields = {"finetune_lr": lr, "scratch_lr": lr, "scratch_lrs": {self.m: lr}, "scratch_at": "same_rate"}
      fields["secondary"] = SAME_RATE
      out.append(judged(cid, text, BB, f"{a} - {label(*SCRATCH, lr)} (same rate)", same, ABOVE_ZERO, **fields))
    return out

  def at_rates(self, cid: str, text: str, arm: tuple[str, str]) -> list[Claim]:
    """translate/last@η - arm@η for each η."""
    return [
      judged(
        cid,
        text,
        BB,
        f"{self.m}: {label(*TRANSLATE_LAST, lr)} - {label(*arm, lr)}",
        paired(self.at(TRANSLATE_LAST, lr), self.at(arm, lr)),
        ABOVE_ZERO,
        finetune_lr=lr,
      )
      for lr in _rates(self.arms, self.m, TRANSLATE_LAST, arm)
    ]

  def off_location(self, cid: str, text: str, arm: tuple[str, str]) -> list[Claim]:
    """translate/last@η - arm@η on off-location accuracy for each η (secondary): does fine-tuning lower the
    accuracy away from the fine-tune location, not only the ratio (which also falls when in-location
    accuracy rises)? A seed whose either row collapsed counts against it, as for the ratio. None at a rate
    whose rows carry no off_acc (rows written without it)."""
    off = lambda a, lr: healthy(self.at(a, lr, "off_acc"), self.at(a, lr))  # noqa: E731
    carried = lambda lr: all(self.arms.has_metric(self.m, *a, lr, "off_acc") for a in (TRANSLATE_LAST, arm))  # noqa: E731
    return [
      judged(
        cid,
        text,
        BB,
        f"{self.m}: {label(*TRANSLATE_LAST, lr)} - {label(*arm, lr)} (off_acc)",
        paired(off(TRANSLATE_LAST, lr), off(arm, lr)),
        ABOVE_ZERO,
        finetune_lr=lr,
        secondary=OFF_ACC,
      )
      for lr in _rates(self.arms, self.m, TRANSLATE_LAST, arm)
      if carried(lr)
    ]

  def share(self, lr: float | None) -> Claim:
    return _share(self.m, lr, self.scratch, self.best, self.at(TRANSLATE_LAST, lr), self.at(CROP_LAST, lr))


def _rates(arms: Arms, m: str, *needed: tuple[str, str]) -> list[float | None]:
  """The rates at which any arm a claim compares at η ran; [None] (one not-run claim) when none did."""
  return arms.rates(m, *needed) or [None]


def _share(m: str, lr, scratch: Series | None, best: Best, translate: Series | None, crop: Series | None) -> Claim:
  """F1(η): (random_crop/last@η - scratch@η*) / (translate/last@η - scratch@η*), as the ratio of the
  seed means of numerator and denominator over every seed where all three are defined (dropping seeds
  whose gain is <= 0 would bias it upward). A figure: no threshold, no t-interval."""
  sl = scratch_label(best)
  compared = f"{m}: ({label(*CROP_LAST, lr)} - S) / ({label(*TRANSLATE_LAST, lr)} - S), S = {sl}"
  claim = judged(
    "F1",
    "share of translate's transferred invariance that random_crop pretraining gives",
    BB,
    compared,
    None,
    ABOVE_ZERO,
    kind="figure",
    finetune_lr=lr,
    scratch_lr=None if best.note else best.rate,
    scratch_lrs={m: None if best.note else best.rate},
    scratch_at="best_validation",
    note=best.note,
  )
  if scratch is None or translate is None or crop is None:
    return claim
  seeds = sorted(scratch.keys() & translate.keys() & crop.keys())
  sample = Sample(seeds, {s: crop[s] - scratch[s] for s in seeds if None not in (scratch[s], translate[s], crop[s])})
  claim.seeds, claim.collapsed, claim.values = seeds, sample.collapsed, sample.values
  claim.denominators = [translate[s] - scratch[s] for s in seeds if s in sample.defined]
  claim.outcome = FIGURE_OUTCOME if sample.defined else UNDEFINED_OUTCOME
  claim.verdict = VERDICT[claim.outcome]
  return claim
