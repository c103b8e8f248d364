"""The claims report: the literature's qualitative results, checked on whatever rows a run has.

Each claim names the rows it compares, the measured effect as a mean over seeds with a 95% t-interval
(paired by seed where two rows are compared), and a verdict fixed before any run:
  ✓  the interval lies on the claimed side of its threshold;
  ✗  it does not;
  needs ≥3 seeds  fewer than `MIN_SEEDS` seeds have the value (the seed spread at laptop scale reaches
                  0.17, so fewer cannot tell an effect from noise);
  rows not run    the run lacks a row the claim needs (e.g. no `fixed` regime, no APS model).
C5 is an exact property (every row, every seed, exactly 100%), so one seed suffices and one miss refutes it.
Only defined invariance scores (in-location accuracy significantly above chance) enter.

The claims (thresholds in `NEAR_CHANCE` and the verdict rules below, set from the papers' statements):
  C1  Biscione & Bowers 2021: a CNN+FC trained from scratch at one location is near chance elsewhere.
  C2  B&B 2021: translate pretraining with the FC layers kept gives new classes invariance
      (`translate/last` above `scratch/full`); C2c, the control: pretraining at one location (`fixed`)
      does not (`translate/last` above `fixed/last`). F1 states, as a figure, how much of translate's
      transferred invariance `random_crop` pretraining gives.
  C3  B&B 2021: `full` fine-tuning at one location loses part of it (C3a: `last` - `full` > 0) yet stays
      above training from scratch (C3b: `full` - `scratch` > 0).
  C4  B&B 2021, Kayhan & van Gemert 2020: a global-average-pool head is more invariant than an FC head on
      the same backbone, both trained from scratch.
  C5  Chaman & Dokmanic 2021: APS with circular padding is exactly consistent under circular shifts.
  C6  Zhang 2019: BlurPool raises shift consistency over max-pool on the same network.
At paper scale (torchvision's networks, `experiment=paper`; listed only when a run has them):
  C7  B&B 2021: DenseNet-121 from scratch is more invariant than VGG16 from scratch ("only DenseNet-121
      was architecturally invariant").
  C8  B&B 2021: ImageNet-pretrained networks give new classes invariance far above scratch
      (`imagenet` - `scratch`, same fine-tune mode, by more than `FAR_ABOVE`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Any

import numpy as np
from scipy import stats
from tabulate import tabulate

MIN_SEEDS = 3
FAR_ABOVE = 0.2  # C8: "far above" = the lower 95% bound of the gain exceeds a fifth of the score's range
NEAR_CHANCE = 0.2  # C1: "near chance off-location" = invariance score below a fifth of the way to in-location
PASS, FAIL, FEW_SEEDS, NOT_RUN, FIGURE = "✓", "✗", "needs ≥3 seeds", "rows not run", "figure"
BB = "Biscione & Bowers, JMLR 2021"
# Architecture keys that make two models the same network but for their head or downsampling.
_HEAD_KEYS = ("head", "fc_hidden")
_DOWNSAMPLE_KEYS = ("downsample", "blur_size", "blur_padding", "aps_norm")


@dataclasses.dataclass
class Claim:
  """One line of the report."""

  id: str
  claim: str
  citation: str
  rows: str  # what was compared, e.g. "cnn_fc: translate/last - scratch/full"
  values: list[float]  # one per seed (a paired difference where two rows are compared)
  verdict: str
  effect: str = ""  # mean [95% interval], filled in by `_finish`

  @property
  def n(self) -> int:
    return len(self.values)


def interval(values: list[float]) -> tuple[float, float, float]:
  """Mean and two-sided 95% t-interval over seeds; the interval is NaN for fewer than 2 values."""
  x = np.asarray(values, float)
  mean = float(x.mean())
  if len(x) < 2:
    return mean, math.nan, math.nan
  half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
  return mean, mean - half, mean + half


class _Rows:
  """Rows of one dataset pair, looked up by (model, regime, mode) -> {seed: value}."""

  def __init__(self, rows: list[dict[str, Any]]):
    self.rows = rows
    self.arch = {r["model"]: r.get("architecture") or {} for r in rows}
    self.models = list(dict.fromkeys(r["model"] for r in rows))
    self.seeds = {r["seed"] for r in rows}

  def values(self, model: str, regime: str, mode: str, metric: str = "invariance") -> dict[int, float] | None:
    """Defined values by seed; None when the run has no such row at all."""
    found = [r for r in self.rows if (r["model"], r["pretrain"], r["finetune"]) == (model, regime, mode)]
    if not found:
      return None
    return {r["seed"]: float(r[metric]) for r in found
            if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])}

  def with_arch(self, **want: Any) -> list[str]:
    return [m for m in self.models if all(self.arch[m].get(k) == v for k, v in want.items())]

  def twins(self, model: str, differing: tuple[str, ...]) -> list[str]:
    """Other models with the same architecture except for the keys in `differing`."""
    same = lambda a: {k: v for k, v in a.items() if k not in differing}  # noqa: E731
    return [m for m in self.models if m != model and same(self.arch[m]) == same(self.arch[model])
            and self.arch[m].get("_target_") == self.arch[model].get("_target_")]


def _paired(a: dict[int, float] | None, b: dict[int, float] | None) -> list[float] | None:
  if a is None or b is None:
    return None
  return [a[s] - b[s] for s in sorted(a.keys() & b.keys())]


def _judge(values: list[float] | None, passes) -> str:
  if values is None:
    return NOT_RUN
  if len(values) < MIN_SEEDS:
    return FEW_SEEDS
  mean, lo, hi = interval(values)
  return PASS if passes(mean, lo, hi) else FAIL


def _above_zero(mean: float, lo: float, hi: float) -> bool:
  return lo > 0


def _claims_for(rows: _Rows) -> list[Claim]:
  out: list[Claim] = []
  fc_models = rows.with_arch(head="fc")
  for m in fc_models or ["(no FC-head model)"]:
    scratch = rows.values(m, "scratch", "full")
    last = {r: rows.values(m, r, "last") for r in ("translate", "fixed", "random_crop")}
    full = rows.values(m, "translate", "full")
    c1 = None if scratch is None else list(scratch.values())
    out.append(Claim("C1", "CNN+FC trained from scratch at one location is near chance elsewhere "
                     f"(invariance < {NEAR_CHANCE})", BB, f"{m}: scratch/full", c1 or [],
                     _judge(c1, lambda mean, lo, hi: hi < NEAR_CHANCE) if c1 else NOT_RUN))
    c2 = _paired(last["translate"], scratch)
    out.append(Claim("C2", "translate pretraining, FC layers kept: new classes gain invariance", BB,
                     f"{m}: translate/last - scratch/full", c2 or [], _judge(c2, _above_zero)))
    c2c = _paired(last["translate"], last["fixed"])
    out.append(Claim("C2c", "control: pretraining at one location (fixed) gives less than translate", BB,
                     f"{m}: translate/last - fixed/last", c2c or [], _judge(c2c, _above_zero)))
    share = None
    if last["random_crop"] is not None and c2 is not None:
      gain = {s: last["translate"][s] - scratch[s] for s in last["translate"].keys() & scratch.keys()}
      share = [(last["random_crop"][s] - scratch[s]) / gain[s]
               for s in sorted(gain.keys() & last["random_crop"].keys()) if gain[s] > 0]
    out.append(Claim("F1", "share of translate's transferred invariance that random_crop pretraining gives",
                     BB, f"{m}: (random_crop/last - scratch/full) / (translate/last - scratch/full)", share or [],
                     NOT_RUN if share is None else FIGURE))
    c3a = _paired(last["translate"], full)
    out.append(Claim("C3a", "full fine-tuning at one location loses part of the invariance", BB,
                     f"{m}: translate/last - translate/full", c3a or [], _judge(c3a, _above_zero)))
    c3b = _paired(full, scratch)
    out.append(Claim("C3b", "... yet stays above training from scratch", BB,
                     f"{m}: translate/full - scratch/full", c3b or [], _judge(c3b, _above_zero)))
  pairs = [(g, f) for g in rows.with_arch(head="gap") for f in rows.twins(g, _HEAD_KEYS)
           if rows.arch[f].get("head") == "fc"]
  for g, f in pairs or [("(GAP model)", "(its FC twin)")]:
    c4 = _paired(rows.values(g, "scratch", "full"), rows.values(f, "scratch", "full"))
    out.append(Claim("C4", "a global-pool head is more invariant than an FC head (both from scratch)",
                     f"{BB}; Kayhan & van Gemert, CVPR 2020", f"{g} - {f}: scratch/full invariance", c4 or [],
                     _judge(c4, _above_zero)))
  for m in rows.with_arch(downsample="aps", padding="circular") or ["(no APS model)"]:
    found = [r for r in rows.rows if r["model"] == m and r.get("consistency_circular") is not None]
    values = [float(r["consistency_circular"]) for r in found]
    verdict = NOT_RUN if not values else PASS if all(v == 1.0 for v in values) else FAIL
    out.append(Claim("C5", "APS + circular padding is exactly consistent under circular shifts (every row)",
                     "Chaman & Dokmanic, CVPR 2021", f"{m}: consistency_circular, all rows", values, verdict))
  pairs = [(b, m) for b in rows.with_arch(downsample="blur") for m in rows.twins(b, _DOWNSAMPLE_KEYS)
           if rows.arch[m].get("downsample") == "max"]
  for b, m in pairs or [("(BlurPool model)", "(its max-pool twin)")]:
    c6 = _paired(rows.values(b, "scratch", "full", "consistency"), rows.values(m, "scratch", "full", "consistency"))
    out.append(Claim("C6", "BlurPool raises shift consistency over max-pool", "Zhang, ICML 2019",
                     f"{b} - {m}: scratch/full consistency", c6 or [], _judge(c6, _above_zero)))
  return out + paper_claims(rows)


def _finish(claim: Claim) -> Claim:
  if claim.values:
    mean, lo, hi = interval(claim.values)
    if claim.id == "C5":
      claim.effect = f"min {min(claim.values):.4f} over {claim.n} rows"
    else:
      claim.effect = f"{mean:+.3f}" + ("" if math.isnan(lo) else f" [{lo:+.3f}, {hi:+.3f}]")
  else:
    claim.effect = "-"
  return claim


def evaluate(rows: list[dict[str, Any]]) -> list[Claim]:
  """Every claim for every dataset pair among `rows` (annotated results rows, see `leaderboard.annotate`)."""
  by_pair: dict[str, list[dict[str, Any]]] = defaultdict(list)
  for r in rows:
    by_pair[r.get("datasets", "")].append(r)
  out = []
  for pair, members in by_pair.items():
    for claim in _claims_for(_Rows(members)):
      if len(by_pair) > 1:
        claim.rows = f"[{pair}] {claim.rows}"
      out.append(_finish(claim))
  return out


COLUMNS = ["id", "claim", "source", "compared", "effect, mean [95% CI]", "n", "verdict"]


def table(claims: list[Claim]) -> list[list[Any]]:
  return [[c.id, c.claim, c.citation, c.rows, c.effect, c.n, c.verdict] for c in claims]


def markdown(claims: list[Claim]) -> str:
  return tabulate(table(claims), headers=COLUMNS, tablefmt="github")


def to_json(claims: list[Claim]) -> list[dict[str, Any]]:
  out = []
  for c in claims:
    mean, lo, hi = interval(c.values) if c.values else (math.nan,) * 3
    out.append({"id": c.id, "claim": c.claim, "citation": c.citation, "compared": c.rows, "values": c.values,
                "mean": mean, "ci95": [lo, hi], "n": c.n, "verdict": c.verdict})
  return out


def _is(arch: dict[str, Any], target: str, **want: Any) -> bool:
  return str(arch.get("_target_", "")).endswith(target) and all(arch.get(k, v) == v for k, v in want.items())


def paper_claims(rows: _Rows) -> list[Claim]:
  """C7 and C8 (module docstring), for runs with torchvision's networks; none for other runs."""
  dense = [m for m in rows.models if _is(rows.arch[m], "DenseNet")]
  vgg16 = [m for m in rows.models if _is(rows.arch[m], "VGG", depth=16, batch_norm=False)]
  tv = [m for m in rows.models if any(_is(rows.arch[m], t) for t in ("DenseNet", "VGG", "TorchvisionResNet"))]
  out = []
  if dense or vgg16:
    for d, v in [(d, v) for d in dense for v in vgg16] or [(dense[0] if dense else "(no densenet121)",
                                                             vgg16[0] if vgg16 else "(no vgg16)")]:
      c7 = _paired(rows.values(d, "scratch", "full"), rows.values(v, "scratch", "full"))
      out.append(Claim("C7", "DenseNet-121 from scratch is more invariant than VGG16 from scratch", BB,
                       f"{d} - {v}: scratch/full invariance", c7 or [], _judge(c7, _above_zero)))
  for m in tv:
    modes = [mode for mode in ("full", "head", "last") if rows.values(m, "imagenet", mode) is not None]
    mode = modes[0] if modes else "full"
    c8 = _paired(rows.values(m, "imagenet", mode), rows.values(m, "scratch", "full"))
    out.append(Claim("C8", f"ImageNet weights give new classes invariance far above scratch (> +{FAR_ABOVE})", BB,
                     f"{m}: imagenet/{mode} - scratch/full", c8 or [],
                     _judge(c8, lambda mean, lo, hi: lo > FAR_ABOVE)))
  return out
