"""How a claim is judged: the values per seed, their 95% t-interval, and the outcome rules, fixed before
any run.

A claim states that a per-seed value (one row's metric, or the paired difference of two rows of the same
seed) lies above or below a threshold (`Rule`). Its `Sample` holds the seeds whose rows ran and the
defined values among them; a seed whose rows ran but whose value is undefined (e.g. an invariance score of
a fine-tune that failed: in-location accuracy not above chance) is *collapsed*. A difference claim (against
0) has a margin, the smallest effect of interest δ (`SMALLEST_EFFECT`, pre-registered): an effect inside
±δ is too small to matter, whichever its sign. The interval is the two-sided (1 - 2α) t-interval, α the
one-sided level of each test (`ALPHA` = 0.025, the 95% interval; Holm lowers it per entry,
`shiftbench.claims.multiplicity`). A paired difference of two arms evaluated on the same test objects also
carries the test set's sampling error, se_obj (a bootstrap over objects, `shiftbench.claims.objects`): its
interval is mean ± sqrt(h_t(α)² + (z(α)·se_obj)²), h_t the t-interval's half-width and z the normal
quantile, both at one-sided α. The outcome:

  supported      the interval lies entirely beyond the threshold + δ on the claimed side, and no seed
                 collapsed;
  contradicted   it lies entirely beyond the threshold - δ on the other side (collapsed seeds or not);
  equivalent     (claims with a margin) it lies entirely inside threshold ± δ, and no seed collapsed: two
                 one-sided tests at α each (TOST) say the effect is smaller than δ either way;
  inconclusive   anything else: it straddles +δ or -δ, or a seed collapsed where the interval would
                 support the claim or show equivalence: a collapsed seed counts against the claim (it is
                 listed, never dropped);
  too_few_seeds  fewer than `MIN_SEEDS` seeds have the rows (the seed spread at laptop scale reaches 0.17,
                 so fewer cannot tell an effect from noise);
  undefined      the rows ran for enough seeds, but fewer than `MIN_SEEDS` of them have a defined value;
  not_run        the run lacks a row the claim needs.
Figures (no threshold) have the outcome `figure` when any seed is defined. `verdict` is how each outcome
is displayed (`VERDICT`). No jax here: the table tools import this module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import special, stats

from shiftbench.claims import objects

MIN_SEEDS = 3
SIGNIFICANCE = 0.01  # in-location accuracy above chance, as for a defined invariance score (metrics.py)
# δ, the smallest effect of interest (pre-registered, docs/protocol.md): a paired difference of invariance,
# accuracy or consistency (each on a 0-1 scale) smaller than this either way does not matter. It is about
# twice the sampling error of one accuracy on 500 test objects (~0.01).
SMALLEST_EFFECT = 0.02
ALPHA = 0.025  # the one-sided level of each test: the tail of the two-sided 95% interval

SUPPORTED, CONTRADICTED, INCONCLUSIVE, EQUIVALENT = "supported", "contradicted", "inconclusive", "equivalent"
TOO_FEW_SEEDS, NOT_RUN_OUTCOME, UNDEFINED_OUTCOME, FIGURE_OUTCOME = "too_few_seeds", "not_run", "undefined", "figure"
OUTCOMES = (
  SUPPORTED,
  CONTRADICTED,
  EQUIVALENT,
  INCONCLUSIVE,
  TOO_FEW_SEEDS,
  UNDEFINED_OUTCOME,
  NOT_RUN_OUTCOME,
  FIGURE_OUTCOME,
)
JUDGED = (SUPPORTED, CONTRADICTED, EQUIVALENT, INCONCLUSIVE)  # outcomes of an interval: Holm adjusts these
DECISIVE = (SUPPORTED, CONTRADICTED, EQUIVALENT)  # what a test concludes (Holm's rejections)
# How the tables show each outcome.
PASS, FAIL, FEW_SEEDS, NOT_RUN, UNDEFINED, FIGURE = "✓", "✗", "needs ≥3 seeds", "rows not run", "undefined", "figure"
VERDICT: dict[str, str] = {
  SUPPORTED: PASS,
  CONTRADICTED: FAIL,
  INCONCLUSIVE: "inconclusive",
  EQUIVALENT: "equivalent",
  TOO_FEW_SEEDS: FEW_SEEDS,
  UNDEFINED_OUTCOME: UNDEFINED,
  NOT_RUN_OUTCOME: NOT_RUN,
  FIGURE_OUTCOME: FIGURE,
}
_OUTCOME_OF = {v: k for k, v in VERDICT.items()}

Series = dict[int, float | None]  # seed -> value (None: the row ran, the value is undefined)


def half_width(x: np.ndarray, alpha: float = ALPHA) -> float:
  """Half-width of the two-sided (1 - 2 `alpha`) t-interval of the mean of `x` (2 values or more; the
  default: 95%)."""
  # `stats.t.ppf` itself, without its ~0.1 ms of argument checks: Holm's bisection calls it often.
  return float(special.stdtrit(len(x) - 1, 1 - alpha) * x.std(ddof=1) / math.sqrt(len(x)))


def interval(values: list[float], alpha: float = ALPHA, se_obj: float | None = None) -> tuple[float, float, float]:
  """Mean and two-sided (1 - 2 `alpha`) t-interval over seeds (the default: 95%), widened by the test set's
  sampling error `se_obj` where given: half-width sqrt(h_t² + (z·se_obj)²). The interval is NaN for fewer
  than 2 values."""
  x = np.asarray(values, float)
  mean = float(x.mean())
  if len(x) < 2:
    return mean, math.nan, math.nan
  half = half_width(x, alpha)
  if se_obj is not None:
    half = math.hypot(half, float(special.ndtri(1 - alpha)) * se_obj)
  return mean, mean - half, mean + half


def confidence(alpha: float) -> str:
  """`95%`, `97.5%`, `98.3%`: the two-sided level of the interval at one-sided `alpha`."""
  return f"{100 * (1 - 2 * alpha):.3g}%"


@dataclasses.dataclass
class Sample:
  """What a claim has to judge: the seeds whose rows ran, and the defined value of each seed that has one;
  for a paired difference of rows on the same objects, the test set's sampling error of the mean (`se_obj`,
  None: not included, `objects_note` says why where it could have been)."""

  seeds: list[int]
  defined: dict[int, float]
  se_obj: float | None = None
  objects_note: str = ""

  @property
  def values(self) -> list[float]:
    return [self.defined[s] for s in self.seeds if s in self.defined]

  @property
  def collapsed(self) -> list[int]:
    """Seeds whose rows ran but whose value is undefined: they count against the claim."""
    return [s for s in self.seeds if s not in self.defined]


def single(a: Series | None) -> Sample | None:
  if a is None:
    return None
  return Sample(sorted(a), {s: v for s, v in a.items() if v is not None})


def paired(a: Series | None, b: Series | None) -> Sample | None:
  """a - b per seed where both rows ran; the difference only where both values are defined."""
  if a is None or b is None:
    return None
  seeds = sorted(a.keys() & b.keys())
  defined = {s: a[s] - b[s] for s in seeds if a[s] is not None and b[s] is not None}
  error = objects.paired_error(a, b, sorted(defined))
  return Sample(seeds, defined, error.se, error.note)


class Rule(NamedTuple):
  """The claimed side of a threshold: `above` (lower bound > threshold + margin) or `below` (upper bound <
  threshold - margin). With a margin, an interval inside threshold ± margin is `equivalent`. A threshold
  that is itself a pre-registered size (C1's 0.2, C8's 0.2) has no margin."""

  side: str
  threshold: float = 0.0
  margin: float = 0.0


ABOVE_ZERO = Rule("above", 0.0, SMALLEST_EFFECT)  # every difference claim: beyond +δ


def decide(lo: float, hi: float, rule: Rule, collapsed: bool = False) -> str:
  """The outcome of the interval [lo, hi] under `rule` (the module docstring's rules); `collapsed`: a seed
  collapsed, so the claim is at best inconclusive unless contradicted."""
  up, down = lo > rule.threshold + rule.margin, hi < rule.threshold - rule.margin
  claimed, other = (up, down) if rule.side == "above" else (down, up)
  if other:
    return CONTRADICTED
  if collapsed:
    return INCONCLUSIVE
  if claimed:
    return SUPPORTED
  inside = rule.threshold - rule.margin < lo and hi < rule.threshold + rule.margin
  return EQUIVALENT if rule.margin > 0 and inside else INCONCLUSIVE


def countable(sample: Sample | None) -> str | None:
  """Why `sample` cannot be judged (not_run, too_few_seeds, undefined), or None when it can."""
  if sample is None:
    return NOT_RUN_OUTCOME
  if len(sample.seeds) < MIN_SEEDS:
    return TOO_FEW_SEEDS
  if len(sample.values) < MIN_SEEDS:
    return UNDEFINED_OUTCOME
  return None


def outcome(sample: Sample | None, rule: Rule, alpha: float = ALPHA) -> str:
  """The module docstring's rules, with the interval at one-sided level `alpha`."""
  why = countable(sample)
  if why is not None:
    return why
  _, lo, hi = interval(sample.values, alpha, sample.se_obj)
  return decide(lo, hi, rule, bool(sample.collapsed))


@dataclasses.dataclass(frozen=True)
class Test:
  """How a judged entry's outcome follows from its samples at a one-sided level α, so that Holm
  (`shiftbench.claims.multiplicity`) can judge it again at its adjusted level: `decide(α)` is the outcome,
  `explain(α)` what the note adds (e.g. a guard's interval at that level)."""

  decide: Callable[[float], str]
  explain: Callable[[float], str] | None = None
  note: str = ""  # the note without `explain`'s part
  p_value: float | None = None  # the smallest α at which `decide` is decisive, where known in closed form


def rule_p_value(sample: Sample, rule: Rule) -> float:
  """The smallest one-sided α at which `outcome(sample, rule, α)` is decisive (1.0: never): each
  conclusion's one-sided t-test p-value (equivalence: the larger of TOST's two), the smallest of those the
  rule allows (with a collapsed seed, contradicted only)."""
  x = np.asarray(sample.values, float)
  mean, se, df = float(x.mean()), float(x.std(ddof=1)) / math.sqrt(len(x)), len(x) - 1
  up = mean - rule.threshold - rule.margin  # > 0 beyond the upper edge
  down = rule.threshold - rule.margin - mean  # > 0 beyond the lower edge
  other = down if rule.side == "above" else up
  distances = [other] if sample.collapsed else [up, down] + ([min(-down, -up)] if rule.margin > 0 else [])
  # A distance d is decisive at α when t(1 - α) * se < d: p = t.sf(d / se); with no spread, at any α if d > 0.
  ps = [(0.0 if d > 0 else 1.0) if se == 0 else float(stats.t.sf(d / se, df)) for d in distances]
  return min(1.0, *ps)


def rule_test(sample: Sample, rule: Rule, note: str = "") -> Test:
  """The sample's test; its p-value in closed form for the t-interval alone (with se_obj, Holm finds it)."""
  p = rule_p_value(sample, rule) if sample.se_obj is None else None
  return Test(lambda alpha: outcome(sample, rule, alpha), note=note, p_value=p)


@dataclasses.dataclass
class Claim:
  """One judged line of the report (claims.json holds every field)."""

  id: str
  claim: str
  citation: str
  rows: str  # what was compared, e.g. "cnn_fc: translate/last@0.01 - scratch/full@0.001 (best val)"
  values: list[float]  # one per defined seed (a paired difference where two rows are compared)
  verdict: str  # the outcome as displayed (`VERDICT`)
  effect: str = ""  # mean [95% interval], and collapsed seeds, filled in by `effect`
  kind: str = "replication"  # or "method" (M1-M3), "property" (C5) or "figure" (F1)
  group: str = ""  # the protocol key of the rows compared
  denominators: list[float] = dataclasses.field(default_factory=list)  # F1: the per-seed gains it is a share of
  outcome: str = ""  # machine-readable (`OUTCOMES`); taken from `verdict` when not given
  seeds: list[int] = dataclasses.field(default_factory=list)  # the seeds whose rows ran
  collapsed: list[int] = dataclasses.field(default_factory=list)  # ran, value undefined: counts against
  model: str | None = None  # the model a one-model claim (C1-C3b, F1, C5, C8, M1-M3) is about; else None
  finetune_lr: float | None = None  # the fine-tune rate of the arms compared at a rate; None otherwise
  scratch_lr: float | None = None  # the rate of the scratch arm, where one model's scratch arm is involved
  scratch_lrs: dict[str, float | None] = dataclasses.field(default_factory=dict)  # model -> its scratch rate
  scratch_at: str | None = None  # "best_validation" (scratch at its own best rate) or "same_rate"
  method_setting: float | None = None  # the method row's setting compared: M2's alpha, M3's beta* (best val)
  note: str = ""  # why a claim could not be judged, where the verdict does not say
  # A secondary entry says what it varies against its claim's primary (pre-registered) entry of the same
  # model and rate, under which every output folds it (`shiftbench.claims.listing`); "" for a primary one.
  secondary: str = ""
  # How the outcome follows from the samples (None: no interval to judge, e.g. not run, a figure, C5);
  # `shiftbench.claims.multiplicity` judges it again at the entry's Holm level and records it below.
  test: Test | None = dataclasses.field(default=None, repr=False, compare=False)
  alpha: float | None = None  # the one-sided level the outcome was judged at (Holm-adjusted; ALPHA alone)
  family: int | None = None  # how many judged entries share its claim family (Holm's m)
  holm_rank: int | None = None  # its place in Holm's order (1: the smallest p-value)
  p_value: float | None = None  # the smallest one-sided level at which its test is decisive (1: never)
  margin: float | None = None  # δ of its rule (None: no margin, or nothing judged)
  se_obj: float | None = None  # the test set's sampling error in its interval (None: seeds' spread only)

  def __post_init__(self):
    self.outcome = self.outcome or _OUTCOME_OF.get(self.verdict, "")

  @property
  def n(self) -> int:
    return len(self.values)

  @property
  def primary(self) -> bool:
    """The pre-registered entry of its claim, model and rate; a secondary one is folded under it."""
    return not self.secondary


def judged(cid: str, claim: str, citation: str, compared: str, sample: Sample | None, rule: Rule, **fields) -> Claim:
  """A claim judged by `rule` on `sample` (None: a row it needs did not run), at level `ALPHA` until
  `multiplicity.holm` judges its family."""
  out = outcome(sample, rule)
  if sample is None:
    return Claim(cid, claim, citation, compared, [], VERDICT[out], outcome=out, **fields)
  if sample.objects_note:
    fields["note"] = "; ".join(t for t in (fields.get("note", ""), sample.objects_note) if t)
  claim = Claim(
    cid,
    claim,
    citation,
    compared,
    sample.values,
    VERDICT[out],
    outcome=out,
    seeds=list(sample.seeds),
    collapsed=sample.collapsed,
    se_obj=sample.se_obj,
    **fields,
  )
  if out in JUDGED:
    claim.test, claim.alpha, claim.margin = rule_test(sample, rule, claim.note), ALPHA, rule.margin or None
  return claim


def rejudge(claim: Claim, alpha: float, out: str | None = None) -> Claim:
  """`claim` judged again at one-sided level `alpha` (its outcome `out` where given: Holm's stop), its
  verdict and note with it."""
  test = claim.test
  if test is None:
    return claim
  claim.alpha = alpha
  claim.outcome = out or test.decide(alpha)
  claim.verdict = VERDICT[claim.outcome]
  if test.explain is not None:
    claim.note = "; ".join(t for t in (test.note, test.explain(alpha)) if t)
  return claim


def figure(claim: Claim) -> float | None:
  """A figure claim's number (F1: mean numerator / mean denominator); None for other claims, or when the
  mean denominator is not positive (a share of no gain is undefined)."""
  if not (claim.values and claim.denominators):
    return None
  gain = float(np.mean(claim.denominators))
  return float(np.mean(claim.values)) / gain if gain > 0 else None


def effect(claim: Claim) -> str:
  """What the tables show as the effect: mean [interval] at the level its outcome was judged at (95%
  unless Holm lowered it: then the level follows, e.g. `[+0.01, +0.09] 97.5%`; a property check: its
  minimum; a figure: the share), how many seeds collapsed, and the note."""
  if not claim.values:
    text = "-"
  elif claim.kind == "property":
    text = f"min {min(claim.values):.4f} over {claim.n} rows"
  elif claim.denominators:
    gain, share = float(np.mean(claim.denominators)), figure(claim)
    text = f"{share:.3f} (of a mean gain {gain:+.3f})" if share is not None else f"- (mean gain {gain:+.3f})"
  else:
    alpha = claim.alpha or ALPHA  # the interval the outcome was judged on
    mean, lo, hi = interval(claim.values, alpha, claim.se_obj)
    text = f"{mean:+.3f}" + ("" if math.isnan(lo) else f" [{lo:+.3f}, {hi:+.3f}]")
    if not math.isnan(lo) and not math.isclose(alpha, ALPHA):
      text += f" {confidence(alpha)}"
  if claim.collapsed and claim.kind != "property":
    text += f"; {len(claim.collapsed)} of {len(claim.seeds)} seeds collapsed"
  return f"{text} ({claim.note})" if claim.note else text
