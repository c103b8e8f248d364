"""Holm's correction within each claim family, applied to interval-based verdicts (pre-registered in
docs/protocol.md).

A family is one claim's entries within one comparable group that have an interval to judge: the same id
and the same `secondary` label (primary entries and each kind of secondary entry are separate families),
over every model and rate, e.g. M1's entries over models x rates, C3b's primary entries over rates. An entry
that cannot be judged (not run, too few seeds, undefined), a figure and a property check are no member.

Each member's `Test` says its outcome at any one-sided level α. Its p-value is the smallest α at which that
outcome is decisive (supported, contradicted or equivalent; 1 if none is: then it has no conclusion to
reject for). Holm's step-down over the family's m members, smallest p first: the k-th (k = 1..m) is judged at
α_k = ALPHA / (m - k + 1), i.e. on its two-sided (1 - 2 α_k) interval; while each is decisive at its α_k, its
outcome is what that interval says; from the first that is not, that one and every later one are
`inconclusive`. A family of one is judged at ALPHA, the 95% interval, as before. Every member records α_k
(`alpha`), m (`family`), k (`holm_rank`) and its p-value. This controls the family-wise error rate of the
decisive outcomes at ALPHA per direction (each conclusion is a one-sided test, or two of them for
equivalence). No jax here.
"""

from __future__ import annotations

import math
from collections import defaultdict

from shiftbench.claims.verdicts import ALPHA, DECISIVE, INCONCLUSIVE, Claim, Test, rejudge

_SMALLEST = 1e-12  # the p-value search's floor: a zero-variance difference is decisive at any level
_STEPS = 40  # bisection steps on log(α), from 1e-12 to 0.5: a relative error of 3e-11


def p_value(test: Test) -> float:
  """The smallest one-sided α in (0, 0.5] at which `test` is decisive (being decisive only grows with α:
  the intervals are nested); 1.0 when it is not decisive even at 0.5. A test that knows its p-value in
  closed form (`verdicts.rule_p_value`) gives it; any other is found by bisection on log(α)."""
  if test.p_value is not None:
    return test.p_value
  decisive = lambda a: test.decide(a) in DECISIVE  # noqa: E731
  if not decisive(0.5):
    return 1.0
  if decisive(_SMALLEST):
    return _SMALLEST
  lo, hi = math.log(_SMALLEST), math.log(0.5)
  for _ in range(_STEPS):
    mid = (lo + hi) / 2
    lo, hi = (lo, mid) if decisive(math.exp(mid)) else (mid, hi)
  return math.exp(hi)


def family(claim: Claim) -> tuple:
  """What a claim's Holm family is keyed by within its group."""
  return claim.group, claim.id, claim.secondary


def holm(claims: list[Claim]) -> list[Claim]:
  """Judges every member of every family in `claims` at its Holm level (the module docstring), in place."""
  families: dict[tuple, list[Claim]] = defaultdict(list)
  for c in claims:
    if c.test is not None:
      families[family(c)].append(c)
  for members in families.values():
    p = {id(c): p_value(c.test) for c in members}
    stopped = False
    for k, c in enumerate(sorted(members, key=lambda c: p[id(c)])):
      alpha = ALPHA / (len(members) - k)
      c.family, c.holm_rank, c.p_value = len(members), k + 1, p[id(c)]
      stopped = stopped or c.test.decide(alpha) not in DECISIVE
      rejudge(c, alpha, INCONCLUSIVE if stopped else None)
  return claims
