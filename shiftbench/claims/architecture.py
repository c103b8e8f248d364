"""The claims about architectures, each model trained from scratch at its own best validation rate η*:
C4 (a global-pool head is more invariant than an FC head), C6 (BlurPool raises shift consistency at the
fine-tune location), and the property check C5 (APS + circular padding is exactly consistent). The rules:
`shiftbench.claims.catalogue`.
"""

from __future__ import annotations

from typing import Any

from shiftbench.claims.arms import SCRATCH, Arms, Best
from shiftbench.claims.forgetting import BB
from shiftbench.claims.verdicts import (
  ABOVE_ZERO,
  CONTRADICTED,
  MIN_SEEDS,
  SIGNIFICANCE,
  SUPPORTED,
  UNDEFINED_OUTCOME,
  VERDICT,
  Claim,
  judged,
  paired,
)
from shiftbench.rows import schema

# Architecture keys that make two models the same network but for their head or downsampling.
HEAD_KEYS = ("head", "fc_hidden")
DOWNSAMPLE_KEYS = ("downsample", "blur_size", "blur_padding", "aps_norm")
C6_METRIC = "consistency_local"  # shift consistency with base points at the fine-tune location (d=4)


def scratch_lrs(*chosen: tuple[str, Best]) -> dict[str, float | None]:
  """Each compared model's scratch rate η* (None where none could be chosen), for claims.json."""
  return {m: None if b.note else b.rate for m, b in chosen}


def rates_text(*chosen: tuple[str, Best]) -> str:
  """` (gap@0.001, cnn_fc@0.01: best val)`: the scratch rate of each model compared; empty without rates."""
  parts = [f"{m}@{schema.format_lr(b.rate)}" for m, b in chosen if b.rate is not None and not b.note]
  return f" ({', '.join(parts)}: best val)" if parts else ""


def responsive(row: dict[str, Any]) -> bool:
  """A row whose model learned something at the fine-tune location: in-location accuracy above chance
  (binomial p < SIGNIFICANCE) and more than one class predicted. A constant predictor is perfectly
  consistent under any shift, so a consistency score of any other row measures nothing."""
  p, distinct = row.get("in_pvalue"), row.get("distinct_predictions")
  return p is not None and p < SIGNIFICANCE and distinct is not None and distinct > 1


def _scratch_pair(
  arms: Arms, a: str, b: str, metric: str = "invariance", guard=None
) -> tuple[Any, tuple[Best, Best], str]:
  """paired(a@η*_a, b@η*_b) on `metric`, both from scratch; and a note when it cannot be formed (no rate
  chosen, or rows that ran without the metric: not run, naming it)."""
  (va, ba), (vb, bb) = arms.scratch(a, metric, guard), arms.scratch(b, metric, guard)
  sample, note = paired(va, vb), ba.note or bb.note
  for m, best in ((a, ba), (b, bb)):
    if not best.note and arms.found(m, *SCRATCH, best.rate) and not arms.has_metric(m, *SCRATCH, best.rate, metric):
      sample, note = None, f"no {metric} in the rows of {m}"
  return sample, (ba, bb), note


def _twin_claim(
  arms: Arms, id: str, claim: str, citation: str, a: str, b: str, metric: str = "invariance", guard=None
) -> Claim:
  """`a` - `b` on `metric`, both scratch/full at their own best validation rates."""
  sample, (ba, bb), note = _scratch_pair(arms, a, b, metric, guard)
  return judged(
    id,
    claim,
    citation,
    f"{a} - {b}: scratch/full {metric}{rates_text((a, ba), (b, bb))}",
    sample,
    ABOVE_ZERO,
    scratch_at="best_validation",
    scratch_lrs=scratch_lrs((a, ba), (b, bb)),
    note=note,
  )


def replications(arms: Arms) -> list[Claim]:
  """C4 for every GAP model and its FC twin, C6 for every BlurPool model and its max-pool twin."""
  out = []
  pairs = [
    (g, f) for g in arms.with_arch(head="gap") for f in arms.twins(g, HEAD_KEYS) if arms.arch[f].get("head") == "fc"
  ]
  for g, f in pairs or [("(GAP model)", "(its FC twin)")]:
    out.append(
      _twin_claim(
        arms,
        "C4",
        "a global-pool head is more invariant than an FC head (both from scratch)",
        f"{BB}; Kayhan & van Gemert, CVPR 2020",
        g,
        f,
      )
    )
  pairs = [
    (b, m)
    for b in arms.with_arch(downsample="blur")
    for m in arms.twins(b, DOWNSAMPLE_KEYS)
    if arms.arch[m].get("downsample") == "max"
  ]
  for b, m in pairs or [("(BlurPool model)", "(its max-pool twin)")]:
    out.append(
      _twin_claim(
        arms,
        "C6",
        "BlurPool raises shift consistency over max-pool (at the fine-tune location, where the model is right)",
        "Zhang, ICML 2019",
        b,
        m,
        C6_METRIC,
        responsive,
      )
    )
  return out


def properties(arms: Arms) -> list[Claim]:
  """C5 for every APS + circular-padding model (one not-run check if there is none)."""
  models = arms.with_arch(downsample="aps", padding="circular")
  return [_aps_property(m, [r for r in arms.rows if r["model"] == m]) for m in models or ["(no APS model)"]]


def _aps_property(m: str, found: list[dict[str, Any]]) -> Claim:
  """C5 on every row of an APS + circular model, every rate and seed: exactly consistent under circular
  shifts. Only rows that are not trivially consistent (`responsive`: more than one class predicted and
  in-location accuracy above chance) can test the identity: a constant predictor scores 1.0 whatever its
  architecture, and a failed fine-tune (at chance) shows nothing either way, so such rows are listed in
  the note and left out. Contradicted when a responsive row is below 1; supported when every responsive
  row is exactly 1 and there are at least `MIN_SEEDS` of them; undefined with fewer, or when a row lacks
  one of the fields (an older results.json); not_run without rows."""
  claim = judged(
    "C5",
    "APS + circular padding is exactly consistent under circular shifts (every row)",
    "Chaman & Dokmanic, CVPR 2021",
    f"{m}: consistency_circular = 1 on every row with >1 class predicted and in_acc above chance",
    None,
    ABOVE_ZERO,
    kind="property",
    model=m if found else None,
  )
  if not found:
    return claim
  claim.seeds = sorted({r["seed"] for r in found})
  fields = ("consistency_circular", "distinct_predictions", "in_pvalue")
  if any(r.get(k) is None for r in found for k in fields):
    claim.values = [float(r["consistency_circular"]) for r in found if r.get("consistency_circular") is not None]
    claim.outcome = UNDEFINED_OUTCOME
  else:
    checked = [r for r in found if responsive(r)]
    claim.values = [float(r["consistency_circular"]) for r in checked]
    skipped = len(found) - len(checked)
    if skipped:
      claim.note = f"{skipped} of {len(found)} rows not checkable: constant or at chance"
    if any(v != 1.0 for v in claim.values):
      claim.outcome = CONTRADICTED
    else:
      claim.outcome = SUPPORTED if len(checked) >= MIN_SEEDS else UNDEFINED_OUTCOME
  claim.verdict = VERDICT[claim.outcome]
  return claim
  claim.seeds = sorted({r["seed"] for r in found})
  claim.values = [float(r["consistency_circular"]) for r in found if r.get("consistency_circular") is not None]
  fields = ("consistency_circular", "distinct_predictions", "in_pvalue")
  if any(r.get(k) is None for r in found for k in fields):
    claim.outcome = UNDEFINED_OUTCOME
  else:
    ok = all(r["consistency_circular"] == 1.0 and responsive(r) for r in found)
    claim.outcome = SUPPORTED if ok else CONTRADICTED
  claim.verdict = VERDICT[claim.outcome]
  return claim
