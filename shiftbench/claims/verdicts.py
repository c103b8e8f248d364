"""How a claim is judged: the values per seed, their 95% t-interval, and the outcome rules, fixed before
any run.

A claim states that a per-seed value (one row's metric, or the paired difference of two rows of the same
seed) lies above or below a threshold (`Rule`). Its `Sample` holds the seeds whose rows ran and the
defined values among them; a seed whose rows ran but whose value is undefined (e.g. an invariance score of
a fine-tune that failed: in-location accuracy not above chance) is *collapsed*. The outcome:

  supported      the interval lies entirely on the claimed side of the threshold, and no seed collapsed;
  contradicted   it lies entirely on the other side (collapsed seeds or not);
  inconclusive   it straddles the threshold, or it is on the claimed side but a seed collapsed: a collapsed
                 seed counts against the claim (it is listed, never dropped);
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
from typing import NamedTuple

import numpy as np
from scipy import stats

MIN_SEEDS = 3
SIGNIFICANCE = 0.01  # in-location accuracy above chance, as for a defined invariance score (metrics.py)

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
TOO_FEW_SEEDS, NOT_RUN_OUTCOME, UNDEFINED_OUTCOME, FIGURE_OUTCOME = "too_few_seeds", "not_run", "undefined", "figure"
OUTCOMES = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, TOO_FEW_SEEDS, UNDEFINED_OUTCOME, NOT_RUN_OUTCOME, FIGURE_OUTCOME)
# How the tables show each outcome.
PASS, FAIL, FEW_SEEDS, NOT_RUN, UNDEFINED, FIGURE = "✓", "✗", "needs ≥3 seeds", "rows not run", "undefined", "figure"
VERDICT: dict[str, str] = {
  SUPPORTED: PASS,
  CONTRADICTED: FAIL,
  INCONCLUSIVE: "inconclusive",
  TOO_FEW_SEEDS: FEW_SEEDS,
  UNDEFINED_OUTCOME: UNDEFINED,
  NOT_RUN_OUTCOME: NOT_RUN,
  FIGURE_OUTCOME: FIGURE,
}
_OUTCOME_OF = {v: k for k, v in VERDICT.items()}

Series = dict[int, float | None]  # seed -> value (None: the row ran, the value is undefined)


def half_width(x: np.ndarray) -> float:
  """Half-width of the two-sided 95% t-interval of the mean of `x` (2 values or more)."""
  return float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def interval(values: list[float]) -> tuple[float, float, float]:
  """Mean and two-sided 95% t-interval over seeds; the interval is NaN for fewer than 2 values."""
  x = np.asarray(values, float)
  mean = float(x.mean())
  if len(x) < 2:
    return mean, math.nan, math.nan
  half = half_width(x)
  return mean, mean - half, mean + half


@dataclasses.dataclass
class Sample:
  """What a claim has to judge: the seeds whose rows ran, and the defined value of each seed that has one."""

  seeds: list[int]
  defined: dict[int, float]

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
  return Sample(seeds, {s: a[s] - b[s] for s in seeds if a[s] is not None and b[s] is not None})


class Rule(NamedTuple):
  """The claimed side of a threshold: `above` (lower bound > threshold) or `below` (upper bound < it)."""

  side: str
  threshold: float = 0.0


ABOVE_ZERO = Rule("above", 0.0)


def outcome(sample: Sample | None, rule: Rule) -> str:
  """The module docstring's rules."""
  if sample is None:
    return NOT_RUN_OUTCOME
  if len(sample.seeds) < MIN_SEEDS:
    return TOO_FEW_SEEDS
  if len(sample.values) < MIN_SEEDS:
    return UNDEFINED_OUTCOME
  _, lo, hi = interval(sample.values)
  claimed, other = (lo > rule.threshold, hi < rule.threshold)
  if rule.side == "below":
    claimed, other = other, claimed
  if other:
    return CONTRADICTED
  return SUPPORTED if claimed and not sample.collapsed else INCONCLUSIVE


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
  """A claim judged by `rule` on `sample` (None: a row it needs did not run)."""
  out = outcome(sample, rule)
  if sample is None:
    return Claim(cid, claim, citation, compared, [], VERDICT[out], outcome=out, **fields)
  return Claim(
    cid,
    claim,
    citation,
    compared,
    sample.values,
    VERDICT[out],
    outcome=out,
    seeds=list(sample.seeds),
    collapsed=sample.collapsed,
    **fields,
  )


def figure(claim: Claim) -> float | None:
  """A figure claim's number (F1: mean numerator / mean denominator); None for other claims, or when the
  mean denominator is not positive (a share of no gain is undefined)."""
  if not (claim.values and claim.denominators):
    return None
  gain = float(np.mean(claim.denominators))
  return float(np.mean(claim.values)) / gain if gain > 0 else None


def effect(claim: Claim) -> str:
  """What the tables show as the effect: mean [95% interval] (a property check: its minimum; a figure:
  the share), how many seeds collapsed, and the note."""
  if not claim.values:
    text = "-"
  elif claim.kind == "property":
    text = f"min {min(claim.values):.4f} over {claim.n} rows"
  elif claim.denominators:
    gain, share = float(np.mean(claim.denominators)), figure(claim)
    text = f"{share:.3f} (of a mean gain {gain:+.3f})" if share is not None else f"- (mean gain {gain:+.3f})"
  else:
    mean, lo, hi = interval(claim.values)
    text = f"{mean:+.3f}" + ("" if math.isnan(lo) else f" [{lo:+.3f}, {hi:+.3f}]")
  if claim.collapsed and claim.kind != "property":
    text += f"; {len(claim.collapsed)} of {len(claim.seeds)} seeds collapsed"
  return f"{text} ({claim.note})" if claim.note else text
