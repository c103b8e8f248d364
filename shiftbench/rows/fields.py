"""The fields of a results row, each declared once with what it is: its kind, one line of meaning, the short
header tables print, and how the tidy table shows it.

`Row` is the declaration: its fields in `results.json` order. The protocol builds every row through
`Row.build` (a field it writes that is not declared here, or a declared one it leaves out, is an error);
`schema` derives which fields are identity, keys, metrics, curve points and provenance from it;
`reporting.tidy` and `reporting.terminal` take their columns and headers from it; the table of row fields in
docs/outputs.md is `Row.markdown()` (tests/test_row_fields.py fails when they differ).

The row's dimensions are `schema.RowId`'s fields and are declared there (with their docs beside it); every
other field is in `RESULTS` below. The shift metrics are a family: `eval.metrics` keys name them, not this
module, so a user's evaluator adds fields without a line here. `MEMBERS` names the default config's ones
that the leaderboard shows, with their headers.

No jax here: the table tools import this module and must start without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

# What a field is. A kind says what may differ between two copies of one row, what is averaged, what is
# shown; docs/outputs.md explains each with the table.
IDENTITY, KEY, SETTING, METRIC, DIAGNOSTIC = "identity", "key", "setting", "metric", "diagnostic"
VALIDATION, RECORD, PROVENANCE, TIMING, ANNOTATION = "validation", "record", "provenance", "timing", "annotation"
KINDS: dict[str, str] = {
  IDENTITY: "the row's dimensions (`schema.RowId`): which row of its run it is",
  KEY: "which experiment it belongs to: rows average over seeds only within one `comparison_key`",
  SETTING: "what it ran with",
  METRIC: "a result: a column of `rows.csv`; the leaderboard shows the main ones, averaged over seeds",
  DIAGNOSTIC: "how far to trust the metrics; a column of `rows.csv`",
  VALIDATION: "measured on B's validation split: what a setting is chosen by, never a result",
  RECORD: "how fine-tuning and evaluation went, in full",
  PROVENANCE: "where the row was run: two copies of one row may differ in these, never in anything else",
  TIMING: "how long it took (may differ between copies of one row, like provenance)",
  ANNOTATION: "attached to each row when a results file is read (`collect.annotate`), not stored in it",
}
# How the tidy table (`rows.csv`, and wandb's summary) shows a field: `KEY_COLUMN` a column after the
# identity where any row has it; `NUMBERS` every number of it a value column (a dict's as `<name>/<key>`).
KEY_COLUMN, NUMBERS = "key", "numbers"


@dataclasses.dataclass(frozen=True)
class Field:
  """One field of a results row.

  Attributes:
    name: its key in `results.json`.
    kind: one of `KINDS`.
    doc: what it holds, in one line (docs/outputs.md's table).
    header: the shorter column header the leaderboard and the terminal print, where it has one.
    column: how `rows.csv` shows it (`KEY_COLUMN`, `NUMBERS` or None); None here means by kind: keys as key
      columns, metrics and diagnostics as numbers, nothing else.
    curve: also recorded at each point of the fine-tune curve (`curve`).
    when: the rows that have it, where not every row does (e.g. "a method's row").
    family: for a named member of a `Family`: the family's name (its value arrives with the family's).
  """

  name: str
  kind: str
  doc: str
  header: str | None = None
  column: str | None = None
  curve: bool = False
  when: str | None = None
  family: str | None = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"field {self.name!r}: unknown kind {self.kind!r}; one of {', '.join(KINDS)}")
    if self.column is None:
      default = {KEY: KEY_COLUMN, METRIC: NUMBERS, DIAGNOSTIC: NUMBERS}.get(self.kind)
      object.__setattr__(self, "column", default)

  @property
  def shown(self) -> str:
    """Its column header: `header`, else its name."""
    return self.header or self.name


@dataclasses.dataclass(frozen=True)
class Family:
  """Fields named by the config, not here: every `eval.metrics` key `<key>` (an evaluator) gives
  `<key><suffix>` and `<key><suffix>_<name>` for each result it yields. Their values arrive as one dict
  under the family's `name`, in the evaluators' order, at the family's place in the row."""

  name: str
  kind: str
  doc: str
  suffix: str = ""

  @property
  def pattern(self) -> str:
    return f"`<key>{self.suffix}`, `<key>{self.suffix}_<name>`"

  def has(self, name: str, keys: Iterable[str]) -> bool:
    """Whether `name` is this family's result for one of the `eval.metrics` `keys`."""
    return any(name == f"{k}{self.suffix}" or name.startswith(f"{k}{self.suffix}_") for k in keys)


class Row:
  """What a results row is: its fields and families in `results.json` order (annotations last: they are
  attached when a file is read), and the named members of its families."""

  def __init__(self, fields: Iterable[Field | Family], members: Iterable[Field] = ()):
    self.fields = tuple(fields)
    self.members = tuple(members)
    self.families = {f.name: f for f in self.fields if isinstance(f, Family)}
    self._by_name = {f.name: f for f in (*self.fields, *self.members) if isinstance(f, Field)}
    if len(self._by_name) + len(self.families) != len(self.fields) + len(self.members):
      raise ValueError("a row field is declared twice")
    stray = [m.name for m in self.members if m.family not in self.families]
    if stray:
      raise ValueError(f"members of no declared family: {', '.join(stray)}")

  def field(self, name: str) -> Field:
    """The declared field (or family member) called `name`; a KeyError if there is none."""
    return self._by_name[name]

  def names(self, *kinds: str) -> tuple[str, ...]:
    """The fields of the given kinds (every one without), in row order; families and members left out."""
    return tuple(f.name for f in self.fields if isinstance(f, Field) and (not kinds or f.kind in kinds))

  def header(self, name: str) -> str:
    return self.field(name).shown

  def build(self, **values: Any) -> dict[str, Any]:
    """A results row: one value per declared field, in the declaration's order; a family's value is the
    dict of its members, spliced in at its place.

    Raises:
      ValueError: a value for no declared field, a declared field without a value (one with `when` may be
        left out), an annotation (attached when read, never stored), or a family member named like a
        field (it would overwrite it).
    """
    stored = [f for f in self.fields if f.kind != ANNOTATION]
    slots = {f.name for f in stored}
    unknown = [k for k in values if k not in slots]
    missing = [f.name for f in stored if f.name not in values and not (isinstance(f, Field) and f.when)]
    if unknown or missing:
      raise ValueError(
        "a row must have exactly the fields declared in shiftbench.rows (fields.RESULTS, schema.RowId): "
        + "; ".join(p for p in (_named("not declared (or not stored)", unknown), _named("missing", missing)) if p)
      )
    out: dict[str, Any] = {}
    for f in stored:
      if f.name not in values:
        continue
      if isinstance(f, Family):
        clash = [k for k in values[f.name] if k in out or k in self._by_name and self._by_name[k].family is None]
        if clash:
          raise ValueError(f"eval.metrics results named like another row field: {', '.join(clash)}; rename the key")
        out.update(values[f.name])
      else:
        out[f.name] = values[f.name]
    return out

  def undeclared(self, row: Mapping[str, Any], metrics: Iterable[str]) -> list[str]:
    """The fields of `row` that are neither declared nor a family's results for one of the `eval.metrics`
    keys `metrics` (none, for a row the protocol wrote)."""
    metrics = tuple(metrics)
    return [k for k in row if k not in self._by_name and not any(f.has(k, metrics) for f in self.families.values())]

  def markdown(self) -> str:
    """The kinds and the table of row fields, as docs/outputs.md shows them."""
    kinds = "\n".join(f"- **{k}**: {doc}" for k, doc in KINDS.items())
    lines = ["| field | kind | meaning |", "|---|---|---|"]
    for f in self.fields:
      if isinstance(f, Family):
        lines.append(f"| {f.pattern} | {f.kind} | {f.doc} |")
        continue
      name = f"`{f.name}`" + (f" (`{f.header}`)" if f.header else "")
      notes = [
        *(["also at each point of `curve`"] if f.curve else []),
        *(["a column of `rows.csv`"] if f.column and f.kind not in (KEY, METRIC, DIAGNOSTIC) else []),
        *([f"only in {f.when}"] if f.when else []),
      ]
      lines.append(f"| {name} | {f.kind} | {'; '.join([f.doc, *notes])} |")
    return f"{kinds}\n\n" + "\n".join(lines) + "\n\n"


def _named(what: str, names: list[str]) -> str:
  return f"{what}: {', '.join(names)}" if names else ""


# Every field after the row's dimensions (`schema.RowId`), in `results.json` order.
SHIFT, SHIFT_BEFORE = "shift", "shift_before"
RESULTS: tuple[Field | Family, ...] = (
  Field("comparison_key", KEY, "hash of every resolved setting that can change the row's numbers (`comparison`)"),
  Field(
    "protocol_key", KEY, "the same without the row's architecture and method settings: the claims compare rows of one"
  ),
  Field(
    "eval_split", SETTING, "the split of B evaluated: `test`, or `validation` for choosing settings (`eval.split`)"
  ),
  Field("distinct_predictions", DIAGNOSTIC, "how many classes the model predicts anywhere on the grid (1: a constant)"),
  Field("in_acc", METRIC, "accuracy at the fine-tune location `p_ft`", curve=True),
  Field("off_acc", METRIC, "mean accuracy over the grid locations away from `p_ft`", curve=True),
  Field(
    "invariance",
    METRIC,
    "`(off_acc - chance) / (in_acc - chance)`; null unless `in_acc` is significantly above chance",
    curve=True,
  ),
  Field(
    "in_pvalue",
    DIAGNOSTIC,
    "one-sided binomial p-value of `in_acc` above chance (`invariance` needs < 0.01)",
    curve=True,
  ),
  Field("val_in_acc", VALIDATION, "`in_acc` on B's validation objects: what a rate is chosen by"),
  Field(
    "val_invariance",
    VALIDATION,
    "`invariance` on B's validation objects: with `val_in_acc`, what L2-SP's β is chosen by",
    when="a method's row",
  ),
  # A setting, but rows.csv has had it as a number since it was written.
  Field("test_objects", SETTING, "how many of B's test objects were evaluated", column=NUMBERS),
  Field(
    "per_object",
    RECORD,
    "each test object's results, in test-object order: `off_correct`, how many of the `off_locations` grid "
    "points away from `p_ft` it is correct at, and `in_correct` (0/1) at `p_ft`: what the claims' bootstrap over "
    "objects resamples (rows of older versions have none)",
  ),
  Field("chance", SETTING, "chance accuracy, `1/K` for B's `K` classes"),
  Field("finetune_steps", RECORD, "the step fine-tuning stopped at"),
  Field(
    "finetune_stop",
    RECORD,
    "which rule ended fine-tuning and where: `{rule: steps, step}` (with `cap_of` where the stopping rule never "
    "fired), `{rule: until_accuracy, step, threshold, window, final_mean}`, or a method's own",
  ),
  # rows.csv has had an (empty) column for it where it is null: kept.
  Field(
    "input_adapter", SETTING, "how grayscale objects reach a 3-channel network (null: they need not)", column=NUMBERS
  ),
  Field("finetune_location", SETTING, "`p_ft`, the fine-tune location `[y, x]`"),
  Field("location_map", RECORD, "accuracy at every grid location after fine-tuning (`ys`, `xs`, `acc`): the heatmap"),
  Field(
    "curve",
    RECORD,
    "`step` and the fields that say so, at step 0 and each evaluated step of fine-tuning; step 0 of `head` and "
    '`full` rows is the `last` row\'s final point (`"from": "probe"`)',
  ),
  Field(
    "pretrain_invariance_before",
    METRIC,
    "A's own invariance with A's classifier before fine-tuning (null without an A map: scratch, imagenet)",
    header="A_inv_before",
  ),
  Field("pretrain_invariance_after", METRIC, "the same on the fine-tuned layers", header="A_inv_after"),
  Field("pretrain_in_acc_before", METRIC, "A's `in_acc` before fine-tuning"),
  Field("pretrain_off_acc_before", METRIC, "A's `off_acc` before fine-tuning"),
  Field("pretrain_in_acc_after", METRIC, "A's `in_acc` on the fine-tuned layers"),
  Field("pretrain_off_acc_after", METRIC, "A's `off_acc` on the fine-tuned layers"),
  Field("pretrain_invariance_lost", METRIC, "`pretrain_invariance_before` minus `_after`", header="A_inv_lost"),
  Field(
    "invariance_lost",
    METRIC,
    "the row's own loss against its `last` row: `invariance` after plain `last` minus the row's own, same "
    "experiment, model, regime, rate and seed (`full`: the forgetting result; `head`: what training the FC layers "
    "lost); null in `last` rows and where either is undefined; filled in once both rows exist",
    header="inv_lost",
  ),
  Field("params", SETTING, "trainable parameters of the fine-tuned model", column=NUMBERS),
  Family(
    SHIFT,
    METRIC,
    "the results of each evaluator of `eval.metrics` after fine-tuning, named by its config key (docs/metrics.md); "
    "a user's evaluator adds its own by its key, with no other change",
  ),
  Family(SHIFT_BEFORE, METRIC, "the same before fine-tuning, for evaluators with `before` set", suffix="_before"),
  Field("eval_seconds", TIMING, "seconds the shift metrics took, before and after fine-tuning"),
  # Provenance, but rows.csv and wandb have had its numbers as columns.
  Field(
    "train_final",
    PROVENANCE,
    "training loss and accuracy at the last logged step (null: the method did not train)",
    column=NUMBERS,
  ),
  Field("finetune_seconds", TIMING, "seconds fine-tuning took"),
  Field("heatmap", PROVENANCE, "the location map's PNG, relative to the run directory"),
  Field("comparison", SETTING, "the settings behind `comparison_key`, as dotted names"),
  Field(
    "pretrain_weights",
    SETTING,
    "the ImageNet weights file it started from (`path`, `sha256`, `arch`, `source`)",
    when="`imagenet` rows",
  ),
  Field("datasets", ANNOTATION, "the dataset pair, `A -> B`", column=KEY_COLUMN),
  Field("architecture", ANNOTATION, "the model's resolved architecture config"),
  Field("source", ANNOTATION, "the results file it was read from", column=KEY_COLUMN),
  Field(
    "reference",
    ANNOTATION,
    "the shipped reference set it came from, `reference <version> <date>` (`shiftbench.rows.reference`)",
    column=KEY_COLUMN,
    when="reference rows",
  ),
  Field("method_info", ANNOTATION, "how its method is shown (title, colour, setting name), from the file's `methods`"),
)

# The default config's shift metrics that the leaderboard shows, with their headers (docs/metrics.md defines
# them). Any other `eval.metrics` result is a member of its family without a line here.
MEMBERS: tuple[Field, ...] = (
  Field("consistency", METRIC, "Zhang's consistency under canvas shifts", family=SHIFT),
  Field("consistency_circular", METRIC, "the same under circular shifts", header="consist_circ", family=SHIFT),
  Field("consistency_local", METRIC, "the same from `p_ft` only", header="consist_local", family=SHIFT),
  Field("worst_case_acc", METRIC, "correct at every grid location", header="worst_case", family=SHIFT),
  Field("worst_of_k_acc", METRIC, "correct at k random grid locations", header="worst_of_k", family=SHIFT),
  Field("flip_rate", METRIC, "prediction changes per 1-pixel step through `p_ft`", family=SHIFT),
  Field("similarity", METRIC, "representation similarity to `p_ft`, penultimate layer", family=SHIFT),
  Field("similarity_before", METRIC, "the same before fine-tuning", header="sim_before", family=SHIFT_BEFORE),
)

# The leaderboard's metric columns, in its order: the result, the shift metrics, then A's own invariance.
BOARD: tuple[str, ...] = (
  "in_acc",
  "off_acc",
  "invariance",
  "invariance_lost",
  "consistency",
  "consistency_circular",
  "consistency_local",
  "worst_case_acc",
  "worst_of_k_acc",
  "flip_rate",
  "similarity",
  "similarity_before",
  "pretrain_invariance_before",
  "pretrain_invariance_after",
  "pretrain_invariance_lost",
)
