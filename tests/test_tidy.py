"""The tidy table: `rows.csv` has one line per results row, the comparison key, the settings that differ
between the collected runs as columns, and every scalar metric; `load_rows` reads the same as pandas."""

import csv
import json

import pytest

from shiftbench.reporting import leaderboard, tidy

# The first columns of rows.csv: the row's identity, then its keys (spelled out: the test is the schema's check).
IDENTITY_THEN_KEYS = [
  "model",
  "pretrain",
  "finetune",
  "finetune_method",
  "method_setting",
  "finetune_lr",
  "seed",
  "comparison_key",
  "protocol_key",
]


def _two_runs(tiny_results, tmp_path):
  """The tiny run and a copy of it that differs only in canvas size (and so in its comparison key)."""
  record = json.loads((tiny_results / "seed0" / "results.json").read_text())
  for size, key in ((20, "aaaaaaaaaaaa"), (24, "bbbbbbbbbbbb")):
    for r in record["rows"]:
      r["comparison"] = {**(r.get("comparison") or {}), "canvas.size": size, "canvas.object_size": 8}
      r["comparison_key"] = r["protocol_key"] = key
    (tmp_path / f"canvas{size}").mkdir()
    (tmp_path / f"canvas{size}" / "results.json").write_text(json.dumps(record))
  return [tmp_path / "canvas20", tmp_path / "canvas24"], len(record["rows"])


def test_rows_csv_has_one_line_per_row_and_the_differing_setting_as_a_column(tiny_results, tmp_path):
  runs, per_run = _two_runs(tiny_results, tmp_path)
  out = tmp_path / "board"
  leaderboard.main([*map(str, runs), "--out", str(out), "--no-figures"])
  with open(out / "rows.csv", newline="") as f:
    lines = list(csv.DictReader(f))
  assert len(lines) == 2 * per_run
  header = list(lines[0])
  assert header[: len(IDENTITY_THEN_KEYS)] == IDENTITY_THEN_KEYS
  assert "canvas.size" in header and "canvas.object_size" not in header  # only what differs
  assert sorted({(line["canvas.size"], line["comparison_key"]) for line in lines}) == [
    ("20", "aaaaaaaaaaaa"),
    ("24", "bbbbbbbbbbbb"),
  ]
  for name in ("in_acc", "off_acc", "invariance", "consistency", "flip_rate", "similarity_layers/pre_logits"):
    assert name in header
  assert {line["finetune"] for line in lines} == {"head", "full"}
  first = json.loads((runs[0] / "results.json").read_text())["rows"][0]
  line = next(x for x in lines if x["finetune"] == first["finetune"] and x["canvas.size"] == "20")
  assert float(line["in_acc"]) == pytest.approx(first["in_acc"]) and int(line["seed"]) == first["seed"]
  pq = pytest.importorskip("pyarrow.parquet")
  table = pq.read_table(out / "rows.parquet")
  assert table.num_rows == 2 * per_run and table.column_names == header


def test_a_run_writes_its_own_rows_csv(tiny_results):
  with open(tiny_results / "seed0" / "rows.csv", newline="") as f:
    lines = list(csv.DictReader(f))
  rows = json.loads((tiny_results / "seed0" / "results.json").read_text())["rows"]
  assert len(lines) == len(rows) and "canvas.size" not in lines[0]  # one run: no setting differs


def test_undefined_values_are_empty_cells_and_lists_are_json():
  rows = [
    {
      "model": "m",
      "pretrain": "scratch",
      "finetune": "full",
      "finetune_lr": 0.01,
      "seed": s,
      "invariance": v,
      "inv_lost": None,
      "comparison": {"canvas.size": 32, "finetune.location": loc},
      "comparison_key": k,
      "protocol_key": k,
    }
    for s, v, loc, k in ((0, 0.5, [10, 10], "a"), (1, None, [0, 0], "b"))
  ]
  columns, values = tidy.table(rows)
  assert columns == [
    *IDENTITY_THEN_KEYS,
    "finetune.location",
    "invariance",
    "inv_lost",
  ]  # undefined in every row, still a column
  # Rows of an older results file, without the method fields, are plain rows.
  assert values[1] == ["m", "scratch", "full", "plain", None, 0.01, 1, "b", "b", "[0, 0]", None, None]
  assert tidy.to_csv(columns, values).splitlines()[2] == 'm,scratch,full,plain,,0.01,1,b,b,"[0, 0]",,'


def test_load_rows_returns_a_dataframe(tiny_results, tmp_path):
  pd = pytest.importorskip("pandas")
  runs, per_run = _two_runs(tiny_results, tmp_path)
  frame = tidy.load_rows(runs)
  assert isinstance(frame, pd.DataFrame) and len(frame) == 2 * per_run
  assert sorted(frame["canvas.size"].unique()) == [20, 24]
  assert frame.groupby("canvas.size")["in_acc"].mean().notna().all()
