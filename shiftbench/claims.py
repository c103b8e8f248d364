"""The claims report: the literature's qualitative results, checked on whatever rows a run has.

Each claim names the rows it compares, the measured effect as a mean over seeds with a 95% t-interval
(paired by seed where two rows are compared), and a verdict fixed before any run:
  ✓  the interval lies on the claimed side of its threshold;
  ✗  it does not;
  needs ≥3 seeds  the rows exist for fewer than `MIN_SEEDS` seeds (the seed spread at laptop scale
                  reaches 0.17, so fewer cannot tell an effect from noise);
  undefined       the rows exist for enough seeds, but fewer than `MIN_SEEDS` of them have a defined value
                  (an invariance score whose in-location accuracy is not above chance is undefined);
  rows not run    the run lacks a row the claim needs (e.g. no `fixed` regime, no APS model).
Each claim is of a kind: a `replication` (an effect the literature measured), a `property` check (C5: an
architectural identity, checked on every row, which a constant predictor would also pass, so it also
requires predictions that are not constant and in-location accuracy above chance), or a `figure` (F1,
no threshold). Claims run per comparable group of rows (one protocol key, `shiftbench.comparison`).

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
PASS, FAIL, FEW_SEEDS, NOT_RUN, UNDEFINED, FIGURE = "✓", "✗", "needs ≥3 seeds", "rows not run", "undefined", "figure"
SIGNIFICANCE = 0.01  # C5: in-location accuracy above chance, as for a defined invariance score (metrics.py)
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
  kind: str = "replication"  # or "property" (C5) or "figure" (F1)
  group: str = ""  # the protocol key of the rows compared
  denominators: list[float] = dataclasses.field(default_factory=list)  # F1: the per-seed gains it is a share of

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

  def values(self, model: str, regime: str, mode: str, metric: str = "invariance") -> dict[int, float | None] | None:
    """Every seed's value (None where undefined); None when the run has no such row at all."""
    found = [r for r in self.rows if (r["model"], r["pretrain"], r["finetune"]) == (model, regime, mode)]
    if not found:
      return None
    out: dict[int, float | None] = {}
    for r in found:
      if r["seed"] in out:  # collect() merges true duplicates; two different rows are a caller's bug
        raise ValueError(f"two rows for {model}/{regime}/{mode} seed {r['seed']} in one comparable group")
      v = r.get(metric)
      out[r["seed"]] = float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None
    return out

  def with_arch(self, **want: Any) -> list[str]:
    return [m for m in self.models if all(self.arch[m].get(k) == v for k, v in want.items())]

  def twins(self, model: str, differing: tuple[str, ...]) -> list[str]:
    """Other models with the same architecture except for the keys in `differing`."""
    same = lambda a: {k: v for k, v in a.items() if k not in differing}  # noqa: E731
    return [
      m
      for m in self.models
      if m != model
      and same(self.arch[m]) == same(self.arch[model])
      and self.arch[m].get("_target_") == self.arch[model].get("_target_")
    ]


@dataclasses.dataclass
class _Sample:
  """What a claim has to judge: the seeds whose rows ran, and the defined values among them."""

  seeds: list[int]
  values: list[float]


def _single(a: dict[int, float | None] | None) -> _Sample | None:
  if a is None:
    return None
  return _Sample(sorted(a), [a[s] for s in sorted(a) if a[s] is not None])


def _paired(a: dict[int, float | None] | None, b: dict[int, float | None] | None) -> _Sample | None:
  """a - b per seed where both rows ran; the difference only where both values are defined."""
  if a is None or b is None:
    return None
  seeds = sorted(a.keys() & b.keys())
  return _Sample(seeds, [a[s] - b[s] for s in seeds if a[s] is not None and b[s] is not None])


def _judge(sample: _Sample | None, passes) -> str:
  if sample is None:
    return NOT_RUN
  if len(sample.seeds) < MIN_SEEDS:
    return FEW_SEEDS
  if len(sample.values) < MIN_SEEDS:
    return UNDEFINED
  mean, lo, hi = interval(sample.values)
  return PASS if passes(mean, lo, hi) else FAIL


def _vals(sample: _Sample | None) -> list[float]:
  return [] if sample is None else sample.values


def _above_zero(mean: float, lo: float, hi: float) -> bool:
  return lo > 0


def _claims_for(rows: _Rows) -> list[Claim]:
  out: list[Claim] = []
  fc_models = rows.with_arch(head="fc")
  for m in fc_models or ["(no FC-head model)"]:
    scratch = rows.values(m, "scratch", "full")
    last = {r: rows.values(m, r, "last") for r in ("translate", "fixed", "random_crop")}
    full = rows.values(m, "translate", "full")
    c1 = _single(scratch)
    out.append(
      Claim(
        "C1",
        f"CNN+FC trained from scratch at one location is near chance elsewhere (invariance < {NEAR_CHANCE})",
        BB,
        f"{m}: scratch/full",
        _vals(c1),
        _judge(c1, lambda mean, lo, hi: hi < NEAR_CHANCE),
      )
    )
    c2 = _paired(last["translate"], scratch)
    out.append(
      Claim(
        "C2",
        "translate pretraining, FC layers kept: new classes gain invariance",
        BB,
        f"{m}: translate/last - scratch/full",
        _vals(c2),
        _judge(c2, _above_zero),
      )
    )
    c2c = _paired(last["translate"], last["fixed"])
    out.append(
      Claim(
        "C2c",
        "control: pretraining at one location (fixed) gives less than translate",
        BB,
        f"{m}: translate/last - fixed/last",
        _vals(c2c),
        _judge(c2c, _above_zero),
      )
    )
    out.append(_share_claim(m, scratch, last["translate"], last["random_crop"]))
    c3a = _paired(last["translate"], full)
    out.append(
      Claim(
        "C3a",
        "full fine-tuning at one location loses part of the invariance",
        BB,
        f"{m}: translate/last - translate/full",
        _vals(c3a),
        _judge(c3a, _above_zero),
      )
    )
    c3b = _paired(full, scratch)
    out.append(
      Claim(
        "C3b",
        "... yet stays above training from scratch",
        BB,
        f"{m}: translate/full - scratch/full",
        _vals(c3b),
        _judge(c3b, _above_zero),
      )
    )
  pairs = [
    (g, f) for g in rows.with_arch(head="gap") for f in rows.twins(g, _HEAD_KEYS) if rows.arch[f].get("head") == "fc"
  ]
  for g, f in pairs or [("(GAP model)", "(its FC twin)")]:
    c4 = _paired(rows.values(g, "scratch", "full"), rows.values(f, "scratch", "full"))
    out.append(
      Claim(
        "C4",
        "a global-pool head is more invariant than an FC head (both from scratch)",
        f"{BB}; Kayhan & van Gemert, CVPR 2020",
        f"{g} - {f}: scratch/full invariance",
        _vals(c4),
        _judge(c4, _above_zero),
      )
    )
  for m in rows.with_arch(downsample="aps", padding="circular") or ["(no APS model)"]:
    out.append(_aps_property(m, [r for r in rows.rows if r["model"] == m]))
  pairs = [
    (b, m)
    for b in rows.with_arch(downsample="blur")
    for m in rows.twins(b, _DOWNSAMPLE_KEYS)
    if rows.arch[m].get("downsample") == "max"
  ]
  for b, m in pairs or [("(BlurPool model)", "(its max-pool twin)")]:
    c6 = _paired(rows.values(b, "scratch", "full", "consistency"), rows.values(m, "scratch", "full", "consistency"))
    out.append(
      Claim(
        "C6",
        "BlurPool raises shift consistency over max-pool",
        "Zhang, ICML 2019",
        f"{b} - {m}: scratch/full consistency",
        _vals(c6),
        _judge(c6, _above_zero),
      )
    )
  return out + paper_claims(rows)


def _share_claim(m: str, scratch, translate, random_crop) -> Claim:
  """F1: (random_crop/last - scratch) / (translate/last - scratch), as the ratio of the seed means of
  numerator and denominator over every seed where all three are defined (dropping seeds whose gain is
  <= 0 would bias it upward)."""
  compared = f"{m}: (random_crop/last - scratch/full) / (translate/last - scratch/full)"
  claim = Claim(
    "F1",
    "share of translate's transferred invariance that random_crop pretraining gives",
    BB,
    compared,
    [],
    NOT_RUN,
    kind="figure",
  )
  if scratch is None or translate is None or random_crop is None:
    return claim
  seeds = sorted(scratch.keys() & translate.keys() & random_crop.keys())
  defined = [s for s in seeds if None not in (scratch[s], translate[s], random_crop[s])]
  claim.values = [random_crop[s] - scratch[s] for s in defined]
  claim.denominators = [translate[s] - scratch[s] for s in defined]
  claim.verdict = UNDEFINED if not defined else FIGURE
  return claim


def _aps_property(m: str, found: list[dict[str, Any]]) -> Claim:
  """C5 as a property check on every row of an APS + circular model: exactly consistent under circular
  shifts, and not trivially so (a constant predictor also scores 1.0): predictions not constant and
  in-location accuracy above chance (binomial p < SIGNIFICANCE)."""
  compared = f"{m}: consistency_circular = 1, >1 class predicted, in_acc above chance; all rows"
  claim = Claim(
    "C5",
    "APS + circular padding is exactly consistent under circular shifts (every row)",
    "Chaman & Dokmanic, CVPR 2021",
    compared,
    [],
    NOT_RUN,
    kind="property",
  )
  if not found:
    return claim
  claim.values = [float(r["consistency_circular"]) for r in found if r.get("consistency_circular") is not None]
  checks = [(r.get("consistency_circular"), r.get("distinct_predictions"), r.get("in_pvalue")) for r in found]
  if any(None in c for c in checks):
    claim.verdict = UNDEFINED  # a row without one of the three (an older results.json): cannot be checked
  else:
    ok = all(c == 1.0 and d > 1 and p < SIGNIFICANCE for c, d, p in checks)
    claim.verdict = PASS if ok else FAIL
  return claim


def figure(claim: Claim) -> float | None:
  """A figure claim's number (F1: mean numerator / mean denominator); None for other claims, or when the
  mean denominator is not positive (a share of no gain is undefined)."""
  if not (claim.values and claim.denominators):
    return None
  gain = float(np.mean(claim.denominators))
  return float(np.mean(claim.values)) / gain if gain > 0 else None


def _finish(claim: Claim) -> Claim:
  if claim.values:
    mean, lo, hi = interval(claim.values)
    if claim.kind == "property":
      claim.effect = f"min {min(claim.values):.4f} over {claim.n} rows"
    elif claim.denominators:
      gain, share = float(np.mean(claim.denominators)), figure(claim)
      claim.effect = f"{share:.3f} (of a mean gain {gain:+.3f})" if share is not None else f"- (mean gain {gain:+.3f})"
    else:
      claim.effect = f"{mean:+.3f}" + ("" if math.isnan(lo) else f" [{lo:+.3f}, {hi:+.3f}]")
  else:
    claim.effect = "-"
  return claim


def evaluate(rows: list[dict[str, Any]], labels: dict[str, str] | None = None) -> list[Claim]:
  """Every claim for every comparable group among `rows` (annotated results rows with a `protocol_key`,
  see `collect.annotate`); `labels` names each group (e.g. by the settings in which it differs)."""
  by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
  for r in rows:
    by_group[r.get("protocol_key", "")].append(r)
  out = []
  for group, members in by_group.items():
    for claim in _claims_for(_Rows(members)):
      claim.group = group
      if len(by_group) > 1:
        claim.rows = f"[{(labels or {}).get(group, group)}] {claim.rows}"
      out.append(_finish(claim))
  return out


COLUMNS = ["id", "kind", "claim", "source", "compared", "effect, mean [95% CI]", "n", "verdict"]


def table(claims: list[Claim]) -> list[list[Any]]:
  return [[c.id, c.kind, c.claim, c.citation, c.rows, c.effect, c.n, c.verdict] for c in claims]


def markdown(claims: list[Claim]) -> str:
  return tabulate(table(claims), headers=COLUMNS, tablefmt="github")


def to_json(claims: list[Claim]) -> list[dict[str, Any]]:
  out = []
  for c in claims:
    mean, lo, hi = interval(c.values) if c.values else (math.nan,) * 3
    out.append(
      {
        "id": c.id,
        "kind": c.kind,
        "group": c.group,
        "claim": c.claim,
        "citation": c.citation,
        "compared": c.rows,
        "values": c.values,
        "denominators": c.denominators or None,
        "mean": mean,  # of `values`: for a figure, the numerator's mean
        "figure": figure(c),
        "ci95": [lo, hi],
        "n": c.n,
        "verdict": c.verdict,
      }
    )
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
    for d, v in [(d, v) for d in dense for v in vgg16] or [
      (dense[0] if dense else "(no densenet121)", vgg16[0] if vgg16 else "(no vgg16)")
    ]:
      c7 = _paired(rows.values(d, "scratch", "full"), rows.values(v, "scratch", "full"))
      out.append(
        Claim(
          "C7",
          "DenseNet-121 from scratch is more invariant than VGG16 from scratch",
          BB,
          f"{d} - {v}: scratch/full invariance",
          _vals(c7),
          _judge(c7, _above_zero),
        )
      )
  for m in tv:
    modes = [mode for mode in ("full", "head", "last") if rows.values(m, "imagenet", mode) is not None]
    mode = modes[0] if modes else "full"
    c8 = _paired(rows.values(m, "imagenet", mode), rows.values(m, "scratch", "full"))
    out.append(
      Claim(
        "C8",
        f"ImageNet weights give new classes invariance far above scratch (> +{FAR_ABOVE})",
        BB,
        f"{m}: imagenet/{mode} - scratch/full",
        _vals(c8),
        _judge(c8, lambda mean, lo, hi: lo > FAR_ABOVE),
      )
    )
  return out
