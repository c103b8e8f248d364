"""The leaderboard tool, its HTML page, the analysis notebook and wandb logging, on a tiny real run."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shiftbench.reporting import leaderboard, tracking
from shiftbench.rows import collect, comparison, schema

ROOT = Path(__file__).resolve().parent.parent


def test_cli_aggregates_seeds_from_every_results_file_and_writes_all_formats(tiny_results, tmp_path):
  out = tmp_path / "board"
  run = subprocess.run(
    [
      sys.executable,
      "-m",
      "shiftbench.reporting.leaderboard",
      str(tiny_results / "seed0"),
      str(tiny_results / "seed1"),
      "--out",
      str(out),
    ],
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ, "PYTHONPATH": str(ROOT)},
  )
  assert run.returncode == 0, run.stderr[-3000:]
  entries = json.loads((out / "leaderboard.json").read_text())
  keys = {(e["model"], e["pretrain"], e["finetune"]) for e in entries}
  assert keys == {("gap", "scratch", m) for m in ("head", "full")}
  for e in entries:
    assert e["seeds"] == [0, 1] and e["params"] > 0 and e["dataset_pair"] and e["architecture"]["head"] == "gap"
    assert e["reference"] and e["invariance_std"] == pytest.approx(0.1 / 2**0.5, abs=1e-6)
    for field in ("in_acc", "off_acc", "invariance", "consistency", "worst_case_acc", "flip_rate", "similarity"):
      assert field in e
  assert "consistency" in (out / "leaderboard.md").read_text()
  header = (out / "leaderboard.csv").read_text().splitlines()[0]
  assert "worst_case_acc_mean" in header and "invariance_lost_std" in header
  page = (out / "index.html").read_text()
  assert "<script>" in page and "<table class='board'>" in page and 'src="http' not in page
  assert len(re.findall(r"data:image/png;base64,", page)) == 2  # location-map grid and curves, inline
  assert (out / "location_maps.png").stat().st_size > 1000 and (out / "forgetting_curves.png").is_file()


def test_invariance_lost_is_each_rows_own_loss_against_its_last_row():
  invariance = {"last": (0.9, 0.8), "head": (0.7, 0.7), "full": (0.5, 0.6)}  # seeds 0 and 1
  rows = [
    {"model": "m", "pretrain": "p", "finetune": f, "finetune_lr": 0.01, "seed": s, "invariance": v[s]}
    for f, v in invariance.items()
    for s in (0, 1)
  ]
  # A results file 0.7.0 wrote: the group's last - full on the last, head and full rows alike.
  for r in rows:
    r["invariance_lost"] = invariance["last"][r["seed"]] - invariance["full"][r["seed"]]
  last, head, full = leaderboard.aggregate(rows)
  assert last["invariance_lost"][2] == 0  # the reference: no loss against itself, shown "-"
  assert head["invariance_lost"][:3] == pytest.approx((0.15, 0.0707107, 2), abs=1e-6)  # (0.2 + 0.1) / 2
  assert full["invariance_lost"][:3] == pytest.approx((0.3, 0.1414214, 2), abs=1e-6)  # (0.4 + 0.2) / 2
  board = leaderboard.build(rows)
  lost = board.columns.index("inv_lost")
  assert [r[lost] for r in board.rows] == ["-", "0.150 ± 0.071", "0.300 ± 0.141"]


def test_notebook_runs_on_a_tiny_run(tiny_results, tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  monkeypatch.setenv("SHIFTBENCH_RESULTS", str(tiny_results))
  monkeypatch.setenv("SHIFTBENCH_FIGURES", str(tmp_path))
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
  nb = nbformat.read(ROOT / "notebooks" / "forgetting.ipynb", as_version=4)
  client = nbclient.NotebookClient(
    nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
  )
  client.execute()
  text = json.dumps(nb["cells"][2]["outputs"])
  assert "2 leaderboard entries" in text and "consistency" in text
  assert (tmp_path / "location_maps.png").is_file() and (tmp_path / "forgetting_curves.png").is_file()


def test_wandb_offline_logs_rows_images_and_the_table_without_network(tiny_results, tmp_path, monkeypatch):
  monkeypatch.setenv("WANDB_MODE", "offline")
  rows = json.loads((tiny_results / "seed0" / "results.json").read_text())["rows"]
  assert {"consistency", "similarity_layers/pre_logits", "flip_rate"} <= set(schema.scalar_metrics(rows[0]))
  tracker = tracking.WandbTracker(mode="offline", project="shiftbench-test")
  tracker.start({"a": 1}, tmp_path, name="t")
  for r in rows:
    tracker.log_row(r, tiny_results / "seed0" / r["heatmap"])
  board = leaderboard.write_leaderboard(collect.collect([tiny_results]), tmp_path / "board")
  tracker.log_table(board.columns, board.rows, {"location_maps": tmp_path / "board" / "location_maps.png"})
  tracker.finish()
  assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


def test_means_count_only_defined_values_and_say_how_many():
  rows = [
    {"model": "m", "pretrain": "translate", "finetune": "full", "finetune_lr": 0.01, "seed": s, "invariance": v}
    for s, v in enumerate([3.625, None, None])
  ]
  entry = leaderboard.aggregate(rows)[0]
  assert entry["invariance"] == (3.625, 0.0, 1)
  board = leaderboard.build(rows)
  cell = board.rows[0][board.columns.index("invariance")]
  assert cell == "3.625 (n=1)"  # never "3.625 ± 0.0" under a 3-seed heading
  assert leaderboard.json_entry(board.entries[0])["invariance_n"] == 1
  assert "invariance_n" in board.csv.splitlines()[0]
  everything = [{**r, "invariance": 0.5} for r in rows]
  assert leaderboard.build(everything).rows[0][board.columns.index("invariance")] == "0.500 ± 0.000"


def test_method_rows_are_lines_of_the_leaderboard_in_the_protocols_order():
  def row(finetune, seed, method="plain", setting=None):
    return {
      "model": "m",
      "pretrain": "translate",
      "finetune": finetune,
      "finetune_method": method,
      "method_setting": setting,
      "finetune_lr": 0.01,
      "seed": seed,
      "invariance": 0.5,
      "in_acc": 0.9,
    }

  made = [("full", "l2sp", 0.1), ("full", "wise", 1.0), ("full", "lpft", None)]
  made += [("full", "wise", 0.5), ("full", "plain", None), ("last", "plain", None)]
  made += [("full", "mine", None)]
  rows = [row(f, s, m, x) for f, m, x in made for s in range(3)]
  rows += [{k: v for k, v in row("head", s).items() if k not in schema.METHOD_DEFAULTS} for s in range(3)]  # older
  # 0.6.0's rows: the setting in a field of its method's own, read as `method_setting`.
  old = [{k: v for k, v in row("full", s, "l2sp").items() if k != schema.SETTING} for s in range(3)]
  rows += [{**r, "wise_alpha": None, "l2sp_beta": 0.01} for r in old]
  board = leaderboard.build(rows)
  at = [board.columns.index(c) for c in ("finetune", schema.METHOD, schema.SETTING)]
  assert [tuple(r[i] for i in at) for r in board.rows] == [
    ("last", "plain", "-"),
    ("head", "plain", "-"),
    ("full", "plain", "-"),
    ("full", "lpft", "-"),
    ("full", "wise", 0.5),
    ("full", "wise", 1.0),
    ("full", "l2sp", 0.01),
    ("full", "l2sp", 0.1),
    ("full", "mine", "-"),
  ]
  assert all(e["seeds"] == [0, 1, 2] for e in board.entries)  # a method's seeds never pool with plain full's
  assert [e[schema.METHOD] for e in map(leaderboard.json_entry, board.entries)][:3] == ["plain"] * 3


def test_a_groups_label_names_protocol_settings_only_never_a_rows_own():
  """Two L2-SP settings beyond identity differ between rows of one protocol: that is no protocol label."""
  entries = [
    {"protocol_key": "p", "model": "m", "finetune_method": "l2sp", "settings": {"canvas.size": 32, **own}}
    for own in ({"method.classifier_ratio": 0.1}, {"method.classifier_ratio": 0.5})
  ]
  names = comparison.differing_settings(entries)
  assert names == ["method.classifier_ratio"]  # shown as a column of the table
  assert leaderboard.group_labels(entries, names) == {"p": "p"}


def test_cli_without_out_writes_into_a_folder_it_names_and_help_says_so(tiny_results, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  leaderboard.main([str(tiny_results / "seed0"), "--no-figures"])
  made = list(tmp_path.iterdir())
  assert len(made) == 1 and made[0].is_dir() and re.fullmatch(r"leaderboard-[\d-]+", made[0].name)
  assert (made[0] / "leaderboard.csv").is_file() and f"{made[0].name}/" in capsys.readouterr().out
  with pytest.raises(SystemExit):
    leaderboard.main(["--help"])
  assert "default: a new folder leaderboard-<date>-<time>/" in " ".join(capsys.readouterr().out.split())


def test_leaderboard_csv_rounds_floats_to_six_significant_digits(tiny_results, tmp_path):
  leaderboard.main([str(tiny_results / "seed0"), str(tiny_results / "seed1"), "--out", str(tmp_path), "--no-figures"])
  cells = [c for line in (tmp_path / "leaderboard.csv").read_text().splitlines()[1:] for c in line.split(",")]
  floats = [c for c in cells if re.fullmatch(r"-?\d*\.\d+(e-?\d+)?", c)]
  assert "0.0707107" in floats  # the std of 0.2 and 0.3, 0.07071067811865477 in full
  assert all(len(re.sub(r"e.*|[-.]", "", c).lstrip("0")) <= leaderboard.CSV_DIGITS for c in floats), floats


def test_a_command_line_mistake_is_one_error_line_naming_it(tiny_results, capsys):
  with pytest.raises(SystemExit) as raised:
    leaderboard.main([str(tiny_results / "seed0"), "--colour"])
  assert raised.value.code == "error: unrecognized arguments: --colour (see shiftbench-leaderboard --help)"
  assert capsys.readouterr().err == ""  # no usage lines above it
