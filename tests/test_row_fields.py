"""The row's declaration (`shiftbench.rows.fields`, `schema.RowId`): every field said once, the protocol's rows
built through it, the docs' table written from it, a metric of one's own a field everywhere by its
`eval.metrics` key alone, and a new dimension one field of `RowId` that every table follows."""

import csv
import json
import subprocess
import sys
import textwrap

import pytest
from conftest import tiny_overrides
from hydra import compose, initialize_config_dir
from test_schema import ROOT

from shiftbench.reporting import terminal, tidy
from shiftbench.rows import fields, schema

sys.path.insert(0, str(ROOT / "scripts"))
import row_fields  # noqa: E402

sys.path.remove(str(ROOT / "scripts"))


def test_the_docs_table_of_row_fields_is_written_from_the_declaration():
  text = row_fields.PAGE.read_text()
  assert row_fields.written(text) == text, "docs/outputs.md is out of date: run python scripts/row_fields.py"


def test_every_field_is_declared_once_with_a_kind_and_a_line():
  assert schema.ROW.names(fields.IDENTITY) == schema.RowId._fields == schema.IDENTITY
  assert set(schema.DIMENSION_DOCS) == set(schema.RowId._fields), "a line on each RowId field, no other"
  assert all(f.doc and f.kind in fields.KINDS for f in (*schema.ROW.fields, *schema.ROW.members))
  assert all(schema.ROW.field(m).kind == fields.METRIC for m in fields.BOARD)
  assert set(schema.DIMENSION_HEADERS) <= set(schema.IDENTITY)


def test_the_classifications_are_the_declarations():
  """What schema, tidy and the terminal derive, as they listed it before the declaration (so the
  leaderboard, rows.csv, wandb and the duplicate check read rows as they did)."""
  assert schema.KEYS == ("comparison_key", "protocol_key")
  assert schema.ANNOTATIONS == ("datasets", "architecture", "source", "reference", "method_info")
  assert set(schema.PROVENANCE) == {
    *("heatmap", "source", "eval_seconds", "finetune_seconds", "train_final", "datasets", "architecture"),
    *("reference", "method_info"),
  }
  numbers = {"distinct_predictions", "in_acc", "off_acc", "invariance", "in_pvalue", "test_objects", "params"}
  numbers |= {"input_adapter", "invariance_lost", "train_final"} | {n for n in schema.ROW.names() if "pretrain_" in n}
  assert set(schema.ROW.names()) - set(schema.NOT_METRICS) == numbers - {"pretrain_weights"}
  assert list(schema.METRICS.items())[3:5] == [("invariance_lost", "inv_lost"), ("consistency", "consistency")]
  assert schema.METRICS["similarity_before"] == "sim_before" and len(schema.METRICS) == 15
  assert schema.CURVE_METRICS == ("in_acc", "off_acc", "invariance")
  assert schema.CURVE_FIELDS == ("in_acc", "off_acc", "invariance", "in_pvalue")
  assert tidy.KEYS == ("comparison_key", "protocol_key", "datasets", "source", "reference")
  assert terminal.KEY_COLUMNS[-3:] == ("in_acc", "invariance", "inv_lost")
  assert terminal.HEADERS == {"finetune": "mode", "finetune_lr": "lr"}


def _values(**changes):
  """One value for every stored field of a plain row, in an order of their own."""
  values = {n: None for n in reversed(schema.ROW.names()) if schema.ROW.field(n).kind != fields.ANNOTATION}
  del values["val_invariance"], values["pretrain_weights"]  # a method's, an imagenet row's
  return {**values, fields.SHIFT: {"worst_case_acc": 0.5}, fields.SHIFT_BEFORE: {"mine_before": 1.0}, **changes}


def test_a_row_is_built_in_the_declared_order_from_exactly_the_declared_fields():
  row = schema.ROW.build(**_values())
  assert list(row)[: len(schema.IDENTITY)] == list(schema.IDENTITY)
  at = list(row).index("params")
  assert list(row)[at + 1 : at + 4] == ["worst_case_acc", "mine_before", "eval_seconds"]
  assert [k for k in row if k not in ("worst_case_acc", "mine_before")] == [k for k in schema.ROW.names() if k in row]
  assert schema.ROW.undeclared(row, ["worst_case", "mine"]) == [] and schema.ROW.undeclared(row, []) == ["mine_before"]
  with pytest.raises(ValueError, match=r"not declared \(or not stored\): new_field"):
    schema.ROW.build(**_values(new_field=1))
  with pytest.raises(ValueError, match="missing: params"):
    schema.ROW.build(**{k: v for k, v in _values().items() if k != "params"})
  with pytest.raises(ValueError, match="named like another row field: in_acc"):
    schema.ROW.build(**_values(**{fields.SHIFT: {"in_acc": 1.0}}))


MY_METRICS = '''
import numpy as np

from shiftbench.evaluators import Evaluator


class LabelShare(Evaluator):
  """The share of test objects of class 0, and how many objects there were (no model run: where a result
  goes is what is tested)."""

  def __init__(self, before: bool = False):
    self.before = bool(before)

  def run(self, predictor, objects, ctx):
    labels = np.asarray(objects.labels)
    yield "", float(np.mean(labels == 0))
    yield "objects", len(labels)
'''


@pytest.mark.slow
def test_a_metric_of_ones_own_is_a_field_of_every_row_and_table_by_its_key_alone(tiny_data_dir, tmp_path):
  """An evaluator outside the package, named by one `eval.metrics` key: results.json, rows.csv and the
  declaration (so the docs' table, which is written from it) take it with no other change."""
  from shiftbench.runs.experiment import run_experiment

  (tmp_path / "my_metrics.py").write_text(textwrap.dedent(MY_METRICS))
  dropped = ("similarity", "consistency", "consistency_circular", "consistency_local", "worst_of_k", "flip_rate")
  with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
    cfg = compose(
      "config",
      overrides=tiny_overrides(tiny_data_dir, str(tmp_path / "ckpt"))
      + ["model=gap", "pretrain.regimes=[scratch]", "finetune.scratch_modes=[full]"]
      + [f"~eval.metrics.{k}" for k in dropped]
      + ["+eval.metrics.my_metric={_target_: my_metrics.LabelShare, before: true}"],
    )
  sys.path.insert(0, str(tmp_path))
  try:
    run_experiment(cfg, tmp_path / "run")
  finally:
    sys.path.remove(str(tmp_path))
  (row,) = json.loads((tmp_path / "run" / "results.json").read_text())["rows"]
  at = list(row).index("params")
  mine = ["my_metric", "my_metric_objects", "my_metric_before", "my_metric_before_objects"]
  assert list(row)[at + 1 : at + 6] == ["worst_case_acc", *mine]  # the config's order, at the families' place
  assert row["my_metric"] == row["my_metric_before"] == pytest.approx(1 / 3) and row["my_metric_objects"] == 18
  assert schema.ROW.undeclared(row, cfg.eval.metrics) == []
  with open(tmp_path / "run" / "rows.csv", newline="") as f:
    (line,) = list(csv.DictReader(f))
  assert {k: float(line[k]) for k in mine} == {k: pytest.approx(row[k]) for k in mine}


# A dimension added the way docs/development.md says: a field of `RowId` and its line, nothing else.
NEW_DIMENSION = """
import importlib.util, json, sys

spec = importlib.util.find_spec("shiftbench.rows.schema")
src = open(spec.origin).read()
src = src.replace("  finetune_lr: float", "  canvas: int\\n  finetune_lr: float", 1)
src = src.replace("DIMENSION_HEADERS:", 'DIMENSION_DOCS["canvas"] = "the canvas size"\\nDIMENSION_HEADERS:', 1)
schema = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = schema
exec(compile(src, spec.origin, "exec"), schema.__dict__)

from shiftbench.reporting import leaderboard, terminal, tidy

row = {"model": "m", "pretrain": "translate", "finetune": "full", "finetune_method": "plain", "finetune_lr": 0.01}
rows = [{**row, "canvas": c, "seed": s, "invariance": 0.5, "in_acc": 0.9} for c in (24, 20) for s in (0, 1)]
board = leaderboard.build(rows)
lines = terminal.key_table(board.columns, board.rows, set(schema.METRICS.values())).splitlines()
print(json.dumps({
  "identity": schema.IDENTITY,
  "tidy": tidy.table(rows)[0][: len(schema.IDENTITY)],
  "board": [r[board.columns.index("canvas")] for r in board.rows],
  "terminal": lines[0].split(),
  "docs": [line for line in schema.ROW.markdown().splitlines() if "canvas" in line],
}))
"""


def test_a_new_dimension_is_a_field_of_rowid_and_every_table_follows():
  out = subprocess.run(
    [sys.executable, "-c", NEW_DIMENSION], capture_output=True, text=True, check=True, cwd=ROOT, timeout=120
  )
  seen = json.loads(out.stdout)
  identity = [*schema.IDENTITY[: schema.IDENTITY.index("finetune_lr")], "canvas", "finetune_lr", "seed"]
  assert seen["identity"] == seen["tidy"] == identity
  assert seen["board"] == [20, 24]  # one leaderboard line each, in order
  assert "canvas" in seen["terminal"] and "lr" in seen["terminal"]
  assert seen["docs"] == ["| `canvas` | identity | the canvas size |"]
