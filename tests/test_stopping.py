"""Where fine-tuning stopped (issue 32): per protocol group and arm, the rows the stopping rule ended (median
and range of the step) apart from the rows that ran to the cap; the same numbers in the terminal,
leaderboard.md, index.html and stopping.json; nothing for rows at a fixed budget. Synthetic rows (no jax),
then one tiny run."""

import json
import re
from pathlib import Path

import pytest

from shiftbench.reporting import leaderboard, stopping, terminal
from shiftbench.rows.schema import format_lr

RULE = {"rule": "until_accuracy", "threshold": 0.95, "window": 100}


def _fired(step):
  return {**RULE, "step": step, "final_mean": 0.951}


def _capped(cap=5000):
  return {"rule": "steps", "step": cap, "cap_of": {**RULE, "final_mean": 0.81}}


def _row(regime, mode, seed, stop, lr=1e-3, key="rule", method="plain", setting=None, invariance=0.5):
  return {
    "model": "cnn_fc",
    "pretrain": regime,
    "finetune": mode,
    "finetune_method": method,
    "method_setting": setting,
    "finetune_lr": lr,
    "seed": seed,
    "invariance": invariance,
    "in_acc": 0.9,
    "off_acc": 0.5,
    "chance": 0.1,
    "protocol_key": key,
    "comparison_key": f"{key}-{regime}",
    "comparison": {"finetune.steps": 5000},
    "datasets": "A -> B",
    "finetune_stop": stop,
  }


# (regime, mode, rate) -> each seed's stop: the step the rule fired at, or None for the cap.
STOPS = {
  ("translate", "full", 1e-3): [220, 150, None, 180, 170],  # fired at 150-220 (median 175), 1 at the cap
  ("translate", "last", 1e-3): [None] * 5,  # a linear probe below 0.95: every row at the cap
  ("scratch", "full", 1e-3): [300, 130, 140, 160, 130],  # median 140
  ("translate", "full", 1e-2): [170],  # one seed: its step is the median and the range
}


def _rows():
  rows = [
    _row(regime, mode, seed, _capped() if step is None else _fired(step), lr)
    for (regime, mode, lr), steps in STOPS.items()
    for seed, step in enumerate(steps)
  ]
  rows += [_row("translate", "full", s, {"rule": "steps", "step": 600}, key="fixed") for s in range(3)]  # a budget
  rows += [
    _row("translate", "full", s, {"rule": "interpolated", "step": 0}, method="wise", setting=0.5) for s in (0, 1)
  ]
  return rows


def test_fired_and_capped_rows_are_counted_apart_per_arm_with_the_median_and_range_of_the_stop_steps():
  (group,) = stopping.groups(_rows())  # the fixed-budget group and WiSE-FT's interpolation have no lines
  assert (group.protocol_key, group.threshold, group.window, group.cap) == ("rule", 0.95, 100, 5000)
  got = [stopping.cells(x) for x in group.lines]
  assert got == [  # the board's order: regimes, then modes, then rates
    ["cnn_fc", "scratch", "full", "plain", "0.001", 5, 5, "140", "130-300", 0],
    ["cnn_fc", "translate", "last", "plain", "0.001", 5, 0, "-", "-", 5],
    ["cnn_fc", "translate", "full", "plain", "0.001", 5, 4, "175", "150-220", 1],
    ["cnn_fc", "translate", "full", "plain", "0.01", 1, 1, "170", "170", 0],
  ], got
  assert group.summary == "The rule fired in 10 of 16 rows; 6 ran to the cap (5000 steps)."
  assert group.heading == "protocol rule · stopping rule: running mean ≥ 0.95 over 100 steps, cap 5000"
  (entry,) = stopping.to_json([group])
  assert (entry["rows"], entry["fired"], entry["capped"], entry["cap"]) == (16, 10, 6, 5000)
  full = entry["lines"][2]
  assert full["stop_steps"] == [150, 170, 180, 220] and (full["median_step"], full["min_step"]) == (175.0, 150)


def test_rows_at_a_fixed_budget_show_nothing():
  fixed = [r for r in _rows() if r["protocol_key"] == "fixed"]
  assert stopping.groups(fixed) == []
  board = leaderboard.build(fixed)
  assert board.stopping == [] and stopping.TITLE not in terminal.summary(board, "out")


def _cells_of_text_table(lines):
  return [line.split() for line in lines if line.startswith("cnn_fc")]


def _cells_of_markdown(section):
  return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| cnn")]


def _cells_of_html(section):
  return [re.findall(r"<td>(.*?)</td>", tr) for tr in re.findall(r"<tr>(<td>.*?)</tr>", section)]


def _cells_of_json(entries):
  out = []
  for g in entries:
    for x in g["lines"]:
      span = (
        "-" if not x["fired"] else str(x["min_step"]) + ("" if x["min_step"] == x["max_step"] else f"-{x['max_step']}")
      )
      median = "-" if x["median_step"] is None else f"{x['median_step']:g}"
      identity = [x["model"], x["pretrain"], x["finetune"], x["method"], format_lr(x["finetune_lr"])]
      out.append([*identity, *map(str, (x["rows"], x["fired"], median, span, x["capped"]))])
  return out


def test_the_terminal_leaderboard_md_index_html_and_stopping_json_show_the_same_numbers(tmp_path):
  board = leaderboard.write_leaderboard(_rows(), tmp_path)
  text = terminal.summary(board, tmp_path)
  section = text[text.index(stopping.TITLE) : text.index("Claims from the literature")]
  md = (tmp_path / "leaderboard.md").read_text()
  md_section = md[md.index(f"## {stopping.TITLE}") : md.index("## Claims from the literature")]
  page = (tmp_path / "index.html").read_text()
  html_section = page[page.index(f"<h2>{stopping.TITLE}</h2>") : page.index("<h2>Leaderboard</h2>")]
  outputs = {
    "terminal": _cells_of_text_table(section.splitlines()),
    "leaderboard.md": _cells_of_markdown(md_section),
    "index.html": _cells_of_html(html_section),
    "stopping.json": _cells_of_json(json.loads((tmp_path / "stopping.json").read_text())),
  }
  expected = [[str(v) for v in stopping.cells(x)] for g in board.stopping for x in g.lines]
  assert len(expected) == 4
  for name, found in outputs.items():
    assert found == expected, name
  for summary in (section, md_section, html_section):
    assert "The rule fired in 10 of 16 rows; 6 ran to the cap (5000 steps)." in summary
  assert max(len(line) for line in section.splitlines()) <= 100
  # A board without rows under the rule removes the earlier board's stopping.json and shows no section.
  leaderboard.write_leaderboard([r for r in _rows() if r["protocol_key"] == "fixed"], tmp_path, figures=False)
  assert not (tmp_path / "stopping.json").exists() and stopping.TITLE not in (tmp_path / "leaderboard.md").read_text()


@pytest.mark.slow
def test_a_tiny_run_under_the_rule_reports_the_row_it_ended_apart_from_the_row_at_the_cap(tiny_data_dir, tmp_path):
  from conftest import tiny_overrides
  from hydra import compose, initialize_config_dir

  from shiftbench.runs.experiment import run_experiment

  overrides = [
    "pretrain.regimes=[scratch]",  # no pretraining
    "finetune.steps=40",  # the cap
    "finetune.until_accuracy={threshold: 0.7, window: 5}",
    # 1e-2 learns the 3 classes within 20 steps (running mean 0.85 there); 1e-7 stays near chance (1/3)
    "finetune.learning_rates=[1e-7,1e-2]",
    "finetune.eval_every=0",
    "finetune.curve_steps=[]",
    "eval.metrics=null",
  ]
  conf = str(Path(__file__).resolve().parent.parent / "conf")
  with initialize_config_dir(config_dir=conf, version_base="1.3"):
    cfg = compose("config", overrides=tiny_overrides(tiny_data_dir, str(tmp_path / "ckpt")) + overrides)
  run = tmp_path / "run"
  record = run_experiment(cfg, run)
  stops = {r["finetune_lr"]: r["finetune_stop"] for r in record["rows"]}
  assert (
    stops[1e-7]["rule"] == "steps" and stops[1e-7]["step"] == 40 and stops[1e-7]["cap_of"]["rule"] == "until_accuracy"
  )
  assert stops[1e-2]["rule"] == "until_accuracy" and stops[1e-2]["step"] < 40, stops
  fired = stops[1e-2]["step"]
  (group,) = json.loads((run / stopping.FILE).read_text())
  assert (group["threshold"], group["window"], group["cap"]) == (0.7, 5, 40)
  assert [(x["finetune_lr"], x["fired"], x["capped"], x["stop_steps"]) for x in group["lines"]] == [
    (1e-7, 0, 1, []),
    (1e-2, 1, 0, [fired]),
  ]
  md = (run / "leaderboard.md").read_text()
  assert f"## {stopping.TITLE}" in md and "The rule fired in 1 of 2 rows; 1 ran to the cap (40 steps)." in md
  assert f"<h2>{stopping.TITLE}</h2>" in (run / "index.html").read_text()
