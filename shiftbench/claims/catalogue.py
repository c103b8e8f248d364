"""The claims report: the literature's qualitative results, checked on whatever rows a run has.

Each claim names the rows it compares, the measured effect as a mean over seeds with a t-interval (paired
by seed where two rows are compared), and an outcome fixed before any run (`shiftbench.claims.verdicts`):
supported, contradicted, equivalent or inconclusive by where the interval lies against the threshold ± δ
(the smallest effect of interest, 0.02, on every difference claim); too_few_seeds, undefined or not_run
when it cannot be judged. The interval is 95%, or wider where Holm's step-down within the claim's family
(its entries over models and rates in one group) lowers the entry's level
(`shiftbench.claims.multiplicity`). A seed whose rows ran but whose value is undefined (a collapsed
fine-tune: in-location accuracy not above chance) counts against the claim: with one, a claim is
contradicted or inconclusive, never supported or equivalent, and the entry lists it. Claims run per
comparable group of rows (one protocol key, `shiftbench.rows.comparison`).

Kinds: a `replication` (an effect the literature measured); a `figure` (F1: a number, no threshold; its
outcome is `figure`, or undefined / not_run); a `method` claim (M1-M8: a fine-tuning method that keeps
invariance, listed after the replications); a `property` check (C5: an architectural identity, checked on
every row, listed last in every table). C1-C8 and F1 read plain rows only (`shiftbench.claims.arms`): a method's
row never enters them.

Learning rates (pre-registered). Rows exist at several fine-tune rates η (`finetune_lr`).
- The scratch arm (`scratch/full`) of each model is judged at its own best validation rate η*: the rate
  whose rows have the highest mean `val_in_acc` (B's held-out validation split) over seeds (ties: the
  smaller rate); the only rate if one ran; if several ran and none has `val_in_acc`, the claims that need
  η* are not_run with a note. Scratch has no pretrained invariance to lose, so the fair baseline is the
  scratch network trained as well as the validation data says; nothing is chosen on test.
- Claims comparing arms at a fine-tune rate are one entry per η, with `finetune_lr`:
  C2(η), C2c(η), F1(η), C3a(η), C3b(η), C8(η). C2 and C3b also get a secondary entry with scratch at the
  same η (`scratch_at="same_rate"`; the primary ones are "best_validation"): every output folds it under
  its primary entry and labels it (`shiftbench.claims.listing`).
- Scratch-only claims (C1, C4, C6, C7) are one entry each, every model at its η*.

The claims (thresholds in `NEAR_CHANCE`, `FAR_ABOVE`, set from the papers' statements):
  C1  Biscione & Bowers 2021: a CNN+FC trained from scratch at one location is near chance elsewhere
      (supported: upper bound < NEAR_CHANCE; contradicted: lower bound > it). FC-head models: `head: fc`
      and torchvision's VGGs; C1-C3 are judged on each.
  C2  B&B 2021: translate pretraining with the FC layers kept gives new classes invariance
      (`translate/last@η` - `scratch/full@η*` > 0); C2c, the control: pretraining at one location does
      not (`translate/last@η` - `fixed/last@η` > 0). F1(η) states, as a figure, how much of translate's
      transferred invariance `random_crop` pretraining gives.
  C3  B&B 2021: `full` fine-tuning at one location loses part of it (C3a: `translate/last@η` -
      `translate/full@η` > 0; a secondary entry asks the same of off-location accuracy, which the ratio
      alone cannot tell) yet stays above training from scratch (C3b: `translate/full@η` -
      `scratch/full@η*` > 0).
  C4  B&B 2021, Kayhan & van Gemert 2020: a global-average-pool head is more invariant than an FC head on
      the same backbone, both trained from scratch.
  C5  Chaman & Dokmanic 2021 (property): APS with circular padding is exactly consistent under circular
      shifts, on every row, with predictions not constant and in-location accuracy above chance.
  C6  Zhang 2019: BlurPool raises shift consistency over max-pool on the same network, measured at the
      fine-tune location (`consistency_local`, where the model is right); a seed counts only if both rows
      are above chance (p < 0.01) and predict more than one class, else it collapsed (a constant
      predictor is perfectly consistent).
At paper scale (torchvision's networks, `experiment=paper`; listed only when a run has them):
  C7  B&B 2021: DenseNet-121 from scratch is more invariant than VGG16 from scratch.
  C8  B&B 2021: ImageNet-pretrained networks give new classes invariance far above scratch
      (`imagenet/<mode>@η` - `scratch/full@η*`: supported when the lower bound > FAR_ABOVE,
      contradicted when the upper bound < it).
Fine-tuning methods (`shiftbench.claims.methods`; rows from `finetune.methods`, all at `full`): one claim
per model with the method's rows and per rate η, on the `translate` regime only (the regime whose
pretraining gives invariance to keep; the methods board shows the others), paired by seed against plain
fine-tuning of the same model, regime, η and seed. The endpoint is off-location accuracy, paired with
in-location accuracy: the off_acc difference beyond +δ, and the in_acc difference d's lower bound above
-bar (contradicted: off_acc beyond -δ, or d's upper bound below -bar; equivalent: off_acc inside ±δ). The
note holds d's interval and the invariance difference (secondary).
  M1  Kumar et al. 2022 (LP-FT): `translate/full lpft@η` - `translate/full@η`, bar ACCURACY_BAR (0.02).
  M2  Wortsman et al. 2022 (WiSE-FT): `wise0.5@η` - `wise1@η` (plain full stands in for α=1 where no α=1
      rows ran: it is exactly α=1), bar M2_GUARD (0.05).
  M3  Li, Grandvalet & Davoine 2018 (L2-SP under Adam): `l2sp β*@η` - `translate/full@η`, bar ACCURACY_BAR,
      at the β* chosen on B's validation split (pre-registered, `methods_claims.best_setting`): among the β
      whose rows' mean `val_in_acc` over seeds is >= the compared arm's mean `val_in_acc` (over its healthy
      seeds) - ACCURACY_BAR (0.02), the one with the highest mean validation off-location accuracy (ties:
      the smaller β); if none qualifies, the β with the highest mean `val_in_acc`; not_run (with a note)
      when the rows have no `val_in_acc`. `method_setting` is β* (M2's: α=0.5).
  The controls, judged only where their rows ran (no not-run entry otherwise), each by the same rule and
  bar ACCURACY_BAR unless said:
  M2b WiSE-FT along the converged probe -> LP-FT: `wise_lpft0.5@η` - `wise_lpft1@η` (exactly LP-FT), bar M2_GUARD.
  M3b decoupled L2-SP at its β*: `l2sp_decoupled β*@η` - `translate/full@η`.
  M3c L2-SP under SGD at its β* (among β > 0): `l2sp_sgd β*@η` - `l2sp_sgd0@η` (plain full under SGD).
  M4  replay at its ρ*: `replay ρ*@η` - `translate/full@η` (Rolnick et al. 2019).
  M5  EWC at its λ*: `ewc λ*@η` - `translate/full@η` (Kirkpatrick et al. 2017).
  M6  surgical fine-tuning: `surgical@η` - `translate/full@η` (Lee et al. 2023).
  M7  the uniform soup over the rates: `soup@η` - `translate/full@η` (Wortsman et al. 2022).
  M8  the optimiser: `l2sp_sgd0@η` (plain full under SGD) - `translate/full@η` (plain full under Adam).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from tabulate import tabulate

from shiftbench.claims import architecture as architecture_claims
from shiftbench.claims import forgetting as forgetting_claims
from shiftbench.claims import listing as listing_lib
from shiftbench.claims import methods as methods_claims
from shiftbench.claims import multiplicity
from shiftbench.claims import paper as paper_claims
from shiftbench.claims.arms import Arms
from shiftbench.claims.forgetting import BB, NEAR_CHANCE
from shiftbench.claims.paper import FAR_ABOVE
from shiftbench.claims.verdicts import (
  EQUIVALENT,
  FAIL,
  FEW_SEEDS,
  FIGURE,
  MIN_SEEDS,
  NOT_RUN,
  OUTCOMES,
  PASS,
  SIGNIFICANCE,
  SMALLEST_EFFECT,
  UNDEFINED,
  Claim,
  effect,
  figure,
  interval,
)

__all__ = [
  "BB",
  "COLUMNS",
  "EQUIVALENT",
  "FAIL",
  "FAR_ABOVE",
  "FEW_SEEDS",
  "FIGURE",
  "MIN_SEEDS",
  "NEAR_CHANCE",
  "NOT_RUN",
  "OUTCOMES",
  "PASS",
  "SIGNIFICANCE",
  "SMALLEST_EFFECT",
  "UNDEFINED",
  "Claim",
  "evaluate",
  "figure",
  "interval",
  "markdown",
  "ordered",
  "shown",
  "table",
  "to_json",
]


def _catalogue(arms: Arms) -> list[Claim]:
  """Every claim of one comparable group: the replications (and F1), the methods, the property checks."""
  return (
    forgetting_claims.claims(arms)
    + architecture_claims.replications(arms)
    + paper_claims.claims(arms)
    + methods_claims.claims(arms)
    + architecture_claims.properties(arms)
  )


def evaluate(rows: list[dict[str, Any]], labels: dict[str, str] | None = None) -> list[Claim]:
  """Every claim for every comparable group among `rows` (annotated results rows with a `protocol_key`,
  see `collect.annotate`); `labels` names each group (e.g. by the settings in which it differs)."""
  by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
  for r in rows:
    by_group[r.get("protocol_key", "")].append(r)
  out = []
  for group, members in by_group.items():
    found = _catalogue(Arms(members))
    for claim in found:
      claim.group = group
    for claim in multiplicity.holm(found):
      if len(by_group) > 1:
        claim.rows = f"[{(labels or {}).get(group, group)}] {claim.rows}"
      claim.effect = effect(claim)
      out.append(claim)
  return ordered(out)


section = listing_lib.section
SECTIONS, HEADINGS = listing_lib.SECTIONS, {at: f"### {h}" for at, h in listing_lib.HEADINGS.items()}


def ordered(claims: list[Claim]) -> list[Claim]:
  """Group by group (in order of appearance), replications and figures, then methods, then property checks."""
  first = {g: i for i, g in reversed(list(enumerate(c.group for c in claims)))}
  return sorted(claims, key=lambda c: (first[c.group], section(c)))


def shown(claims: list[Claim]) -> list[Claim]:
  """The primary entries (each output folds the secondary ones under them, `listing`)."""
  return [c for c in ordered(claims) if c.primary]


COLUMNS = ["id", "lr", "verdict", "effect, mean [CI]", "n", "entry", "claim", "compared", "kind", "source"]


def _line(c: Claim) -> list[Any]:
  return [
    listing_lib.shown_id(c), listing_lib.rate(c), c.verdict, c.effect, c.n, listing_lib.role(c), c.claim, c.rows,
    c.kind, c.citation,
  ]  # fmt: skip


def table(claims: list[Claim]) -> list[list[Any]]:
  """Every entry (`listing.entries`: each primary followed by its secondaries, not-run ones last); columns
  `COLUMNS`."""
  return [_line(c) for e in listing_lib.entries(ordered(claims)) for c in (e.claim, *e.secondary)]


def markdown(claims: list[Claim]) -> str:
  """The claims as Markdown (`listing`): per comparable group, the replications, then the methods and the
  property checks under their own headings, secondary entries under their primary one; the claims whose
  rows did not run named on one line."""
  report = listing_lib.listing(ordered(claims))
  several = len(report.groups()) > 1
  parts = []
  for label in report.groups():
    if several:
      parts.append(f"### [{label}]")
    for b in (b for b in report.blocks if b.label == label):
      lines = [_line(c) for c in b.claims()]
      title = f"{HEADINGS[b.section]}\n\n" if b.section in HEADINGS else ""
      parts.append(title + tabulate(lines, headers=COLUMNS, tablefmt="github"))
    parts += [f"*{line}*" for line in report.not_run_lines(label)]
  return "\n\n".join(parts)


def _json(c: Claim) -> dict[str, Any]:
  mean, lo, hi = interval(c.values, se_obj=c.se_obj) if c.values else (math.nan,) * 3
  ci_judged = list(interval(c.values, c.alpha, c.se_obj)[1:]) if c.values and c.alpha is not None else None
  return {
    "id": c.id,
    "primary": c.primary,
    "kind": c.kind,
    "group": c.group,
    "claim": c.claim,
    "citation": c.citation,
    "compared": c.rows,
    "model": c.model,
    "finetune_lr": c.finetune_lr,
    "scratch_lr": c.scratch_lr,
    "scratch_lrs": c.scratch_lrs or None,
    "scratch_at": c.scratch_at,
    "method_setting": c.method_setting,
    "seeds": c.seeds,
    "collapsed": c.collapsed,
    "values": c.values,
    "denominators": c.denominators or None,
    "mean": mean,  # of `values`: for a figure, the numerator's mean
    "figure": figure(c),
    "ci95": [lo, hi],
    "n": c.n,
    "smallest_effect": c.margin,  # δ: supported / contradicted beyond ±δ, equivalent inside it
    # The test set's sampling error of the mean difference (`objects`), in both intervals; null: seeds only.
    "se_obj": c.se_obj,
    # Holm within the claim's family (`multiplicity`): the one-sided level `alpha` its outcome was judged
    # at, on `ci_judged` (the two-sided 1 - 2 alpha interval), its rank and p-value among `family` entries.
    "holm": None
    if c.alpha is None
    else {"alpha": c.alpha, "family": c.family, "rank": c.holm_rank, "p_value": c.p_value, "ci_judged": ci_judged},
    "outcome": c.outcome,
    "verdict": c.verdict,
    "note": c.note or None,
    "entry": listing_lib.role(c),
  }


def to_json(claims: list[Claim]) -> list[dict[str, Any]]:
  """claims.json: every primary entry (`"primary": true`, `"entry": "primary"`) with its machine-readable
  `outcome`, in listing order, and under `secondaries` the entries folded under it (`"primary": false`,
  `"entry"`: "secondary: " and what they vary against it)."""
  out = []
  for e in listing_lib.entries(ordered(claims)):
    out.append({**_json(e.claim), **({"secondaries": [_json(c) for c in e.secondary]} if e.claim.primary else {})})
  return out
