"""The board with reference rows (`shiftbench.rows.reference`): where each line came from, its rank among
the models of its arm, and which claims read reference rows.

When any row of a board is a reference row, the board gains two columns after the row's dimensions:
`source` (`this run`, or the reference set: `reference 0.7.0 2026-12-07`; a line whose seeds came from both
says both) and `rank` (`k/N`: the line's place by mean invariance among the N lines of one protocol key,
pretrain regime, fine-tune mode, method, setting and rate, i.e. the models run like for like; `-` where its
invariance is undefined). The lines are ordered arm by arm, ranked within each, so a user's model sits
beside the reference models it is compared with. A claim that read a reference row says so in its note.
Without reference rows nothing here changes a board.
"""

from __future__ import annotations

import html
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from shiftbench.claims.arms import SCRATCH, label, method_arm
from shiftbench.claims.verdicts import NOT_RUN_OUTCOME, Claim, effect
from shiftbench.rows import reference, schema

SOURCE, RANK = "source", "rank"
COLUMNS = (SOURCE, RANK)
# A line's arm: the rows of one protocol that a rank compares across models.
ARM = ("protocol_key", "pretrain", "finetune", schema.METHOD, schema.SETTING, schema.LR)


def present(rows: Iterable[dict[str, Any]]) -> bool:
  """Whether any of `rows` is a reference row (then the board shows `COLUMNS`)."""
  return any(reference.is_reference(r) for r in rows)


def mark(entries: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """`entries` (`leaderboard.aggregate`'s lines) with `source` and `rank` set, ordered arm by arm (in the
  order the arms first appear) and by rank within each."""
  sources: dict[tuple, list[str]] = defaultdict(list)
  for r in rows:
    sources[schema.group(r)].append(reference.source(r))
  for e in entries:
    found = sources.get(tuple(e[k] for k in schema.GROUP), [])
    e[SOURCE] = " + ".join(dict.fromkeys(found)) or reference.THIS_RUN
  arms: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
  for e in entries:
    arms[tuple(e.get(k) for k in ARM)].append(e)
  out = []
  for members in arms.values():
    ranked = sorted((e for e in members if e["invariance"][2]), key=lambda e: -e["invariance"][0])
    for i, e in enumerate(ranked):
      e[RANK] = f"{i + 1}/{len(members)}"
    undefined = [e for e in members if not e["invariance"][2]]  # no seed with a defined invariance
    for e in undefined:
      e[RANK] = "-"
    out += ranked + undefined
  return out


def note_claims(claims: list[Claim], rows: list[dict[str, Any]]) -> None:
  """Adds to the note of every claim that was judged on a reference row which arms came from reference rows
  (every arm: "every arm from reference ..."), and redoes its effect text. A claim not run (a row it needs
  is missing) gets none: it was judged on nothing."""
  by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
  for r in rows:
    by_group[r.get("protocol_key", "")].append(r)
  for c in claims:
    if c.outcome == NOT_RUN_OUTCOME:
      continue
    used = [r for r in by_group.get(c.group, []) if _reads(c, r)]
    arms = dict.fromkeys(_arm_text(r) for r in used if reference.is_reference(r))
    if not arms:
      continue
    labels = " + ".join(dict.fromkeys(r[reference.LABEL] for r in used if reference.is_reference(r)))
    mine = any(not reference.is_reference(r) for r in used)
    text = f"{', '.join(arms)} from {labels}" if mine else f"every arm from {labels}"
    c.note = f"{c.note}; {text}" if c.note else text
    c.effect = effect(c)


def _arm_text(row: dict[str, Any]) -> str:
  return f"{row['model']} {_arm_label(row)}"


def _arm_label(row: dict[str, Any]) -> str:
  lr = row.get(schema.LR)
  if schema.is_plain(row):
    return label(row["pretrain"], row["finetune"], lr)
  return method_arm(row["pretrain"], schema.dimension(row, schema.METHOD), schema.dimension(row, schema.SETTING), lr)


def _bounded(text: str) -> str:
  """A pattern for `text` not running on into a longer name or number."""
  return r"(?<![\w.])" + re.escape(text) + r"(?![\w.])"


def _reads(claim: Claim, row: dict[str, Any]) -> bool:
  """Whether `claim` compared `row`'s arm: its model is the claim's (or one of the models whose scratch
  rate it chose), and its arm is named in what the claim compared (a model's scratch arm also where the
  claim names it by the rate it chose: `scratch/full ... (gap@0.001, ...)`). A property check reads every
  row of its model."""
  model, text = row["model"], claim.rows
  models = {claim.model} if claim.model else set(claim.scratch_lrs)
  if model not in models and not (not models and re.search(_bounded(model), text)):
    return False
  if claim.kind == "property":
    return True
  lr = row.get(schema.LR)
  if schema.is_plain(row):
    if re.search(_bounded(label(row["pretrain"], row["finetune"], lr)), text):
      return True
    scratch = (row["pretrain"], row["finetune"]) == SCRATCH
    return scratch and model in claim.scratch_lrs and claim.scratch_lrs[model] == lr and "scratch/full" in text
  setting = schema.dimension(row, schema.SETTING)
  method = f"{row['pretrain']}/full {schema.method_label(schema.dimension(row, schema.METHOD), setting)}"
  rate = "" if lr is None else f"@{schema.format_lr(lr)}"
  return bool(re.search(_bounded(method), text)) and (not rate or re.search(re.escape(rate) + r"(?![\w.])", text))


def page_note(entries: list[dict[str, Any]]) -> str:
  """The page's line above the leaderboard where some lines are reference rows (HTML; empty otherwise)."""
  labels = dict.fromkeys(s for e in entries for s in e.get(SOURCE, "").split(" + ") if s.startswith(reference.LABEL))
  if not labels:
    return ""
  return (
    f"<p>Lines whose <code>source</code> is <code>{html.escape(', '.join(labels))}</code> are shiftbench's shipped "
    "reference rows of the same protocol (not rerun here; <code>reference: false</code> or "
    "<code>shiftbench-leaderboard --no-reference</code> leaves them out). <code>rank</code> orders the models "
    "of one arm (regime, mode, method, rate) by mean invariance.</p>\n"
  )
