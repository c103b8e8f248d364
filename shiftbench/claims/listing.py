"""What every output of the claims report lists, in one order: the terminal, `leaderboard.md`, `claims.json`
and `index.html` all render `listing(claims)`, so they show the same claims with the same outcomes.

- Each claim has one *primary* entry per model and rate (the pre-registered comparison, e.g. C3b(η) against
  scratch at its best validation rate).
- A *secondary* entry (a `Claim` with `secondary` set, e.g. C3b(η) against scratch at the same rate η) is
  folded under the primary entry of the same group, claim, model and rate, labelled, never listed as its
  peer.
- Entries are grouped by comparable group (protocol key), then by section: the replications and figures,
  the fine-tuning methods, the property checks.
- A primary entry whose rows did not run is not a line of its own: the group's `not_run` names it, with
  what runs the rows it lacks.

No jax here.
"""

from __future__ import annotations

import dataclasses
import re

from shiftbench.claims.verdicts import NOT_RUN_OUTCOME, Claim
from shiftbench.rows.schema import format_lr

METHODS, PROPERTIES = 1, 2
# Where each kind is listed within a group: replications and figures (0), then the methods, then the
# property checks (each section under its own heading in every output).
SECTIONS = {"method": METHODS, "property": PROPERTIES}
HEADINGS = {METHODS: "Fine-tuning methods", PROPERTIES: "Property checks"}
# What runs the rows a not-run claim lacks, by section (the property checks' rows come with reproduce's).
NOT_RUN_HINTS = {
  0: "experiment=reproduce runs every row the claims compare",
  METHODS: "experiment=methods runs the methods' rows",
}
SECONDARY_MARK = "↳"  # before a secondary entry's id in every table
_GROUP = re.compile(r"\[(.+?)\] (.*)", re.S)  # catalogue.evaluate prefixes the group label when there are several


def section(claim: Claim) -> int:
  return SECTIONS.get(claim.kind, 0)


@dataclasses.dataclass
class Entry:
  """A primary claim entry and the secondary entries folded under it."""

  claim: Claim
  secondary: list[Claim] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Block:
  """One section of one comparable group: its run entries, in the catalogue's order."""

  label: str  # the group's label ("" when the rows form one group)
  section: int
  entries: list[Entry]

  def claims(self) -> list[Claim]:
    """Its entries' claims in order, each primary followed by its secondaries."""
    return [c for e in self.entries for c in (e.claim, *e.secondary)]


@dataclasses.dataclass
class Listing:
  blocks: list[Block]
  not_run: dict[str, dict[int, list[str]]]  # group label -> hint section -> claim ids, each once

  def groups(self) -> list[str]:
    return list(dict.fromkeys([*(b.label for b in self.blocks), *self.not_run]))

  def not_run_lines(self, label: str) -> list[str]:
    """ "not run here: C4, C5 (experiment=reproduce runs ...)": one line per what runs them."""
    found = sorted(self.not_run.get(label, {}).items())
    return [f"not run here: {', '.join(ids)} ({NOT_RUN_HINTS[hint]})" for hint, ids in found]


def group_label(claim: Claim) -> str:
  found = _GROUP.match(claim.rows)
  return found.group(1) if found else ""


def compared(claim: Claim) -> str:
  """What the claim compared, without the group label (its block says it)."""
  found = _GROUP.match(claim.rows)
  return found.group(2) if found else claim.rows


def rate(claim: Claim) -> str:
  """The fine-tune rate of the rows compared, as the tables show it ("-": a claim not at a rate)."""
  return "-" if claim.finetune_lr is None else format_lr(claim.finetune_lr)


def shown_id(claim: Claim) -> str:
  """The id as a table shows it: a secondary entry's marked `↳ C3b`."""
  return claim.id if claim.primary else f"{SECONDARY_MARK} {claim.id}"


def role(claim: Claim) -> str:
  """ "primary", or "secondary: <what it varies>"."""
  return "primary" if claim.primary else f"secondary: {claim.secondary}"


def _key(c: Claim) -> tuple:
  return c.group, c.id, c.model, c.finetune_lr


def fold(claims: list[Claim]) -> list[Entry]:
  """Every primary entry with its secondaries folded under it, in the order of `claims`; a secondary entry
  with no primary to fold under (the catalogue makes none) is an entry of its own, still labelled."""
  entries: dict[tuple, Entry] = {}
  out = []
  for c in claims:
    if c.primary:
      entries[_key(c)] = Entry(c)
      out.append(entries[_key(c)])
  for c in claims:
    if not c.primary:
      if _key(c) in entries:
        entries[_key(c)].secondary.append(c)
      else:
        out.append(Entry(c))
  return out


def _not_run(entry: Entry) -> bool:
  """Named on the not-run line: the entry's rows did not run, nor its secondaries', and no note says more."""
  return not entry.claim.note and all(c.outcome == NOT_RUN_OUTCOME for c in (entry.claim, *entry.secondary))


def listing(claims: list[Claim]) -> Listing:
  """The claims (`catalogue.ordered`) as every output lists them (the module docstring)."""
  blocks: dict[tuple[str, int], Block] = {}
  not_run: dict[str, dict[int, list[str]]] = {}
  for e in fold(claims):
    label, at = group_label(e.claim), section(e.claim)
    if _not_run(e):
      ids = not_run.setdefault(label, {}).setdefault(at if at in NOT_RUN_HINTS else 0, [])
      if e.claim.id not in ids:
        ids.append(e.claim.id)
    else:
      blocks.setdefault((label, at), Block(label, at, [])).entries.append(e)
  order = {label: i for i, label in enumerate(dict.fromkeys(group_label(c) for c in claims))}
  return Listing(sorted(blocks.values(), key=lambda b: (order[b.label], b.section)), not_run)


def entries(claims: list[Claim]) -> list[Entry]:
  """Every entry in listing order: the listed ones, then the not-run ones (what claims.json and the wandb
  claims table hold)."""
  listed = [e for b in listing(claims).blocks for e in b.entries]
  seen = {id(e.claim) for e in listed}
  return listed + [e for e in fold(claims) if id(e.claim) not in seen]
