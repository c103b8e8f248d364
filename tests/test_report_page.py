"""The leaderboard page shows the claims and their verdicts first, in a table that wraps instead of
scrolling; the terminal prints only the key columns and short claim lines."""

import html
import re

from shiftbench.claims import catalogue as claims
from shiftbench.reporting import page as report
from shiftbench.reporting import terminal

WIDE = [
  "model",
  "pretrain",
  "finetune",
  "finetune_method",
  "method_setting",
  "finetune_lr",
  "seeds",
  "in_acc",
  "off_acc",
  "invariance",
  "inv_lost",
  "consistency",
  "consist_circ",
  "consist_local",
  "worst_case",
  "worst_of_k",
  "flip_rate",
  "similarity",
  "sim_before",
  "A_inv_before",
  "A_inv_after",
  "A_inv_lost",
  "params",
]


def _claims():
  return [
    claims.Claim(
      "C2",
      "translate pretraining, FC layers kept: new classes gain invariance",
      claims.BB,
      "cnn_fc: translate/last - scratch/full",
      [0.8, 0.9, 0.85],
      claims.PASS,
      "+0.850 [+0.726, +0.974]",
    ),
    claims.Claim(
      "C3a",
      "full fine-tuning at one location loses part of the invariance",
      claims.BB,
      "cnn_fc: (random_crop/last - scratch/full) / (translate/last - scratch/full)",
      [0.1, -0.2, 0.05],
      claims.FAIL,
      "-0.017 [-0.412, +0.379]",
    ),
    claims.Claim(
      "C5",
      "APS + circular padding is exactly consistent",
      "Chaman & Dokmanic, CVPR 2021",
      "aps: consistency_circular, all rows",
      [],
      claims.NOT_RUN,
      "-",
    ),
  ]


def _board_rows():
  methods = [(m, "plain", "-") for m in ("last", "head", "full")] + [("full", "wise", 0.5)]
  methods.append(("full", "l2sp", 0.001))  # the longest label of the built-in settings
  return [["cnn_fc", "translate", *m, 0.001, 3, *["0.872 ± 0.031"] * 15, 205578] for m in methods]


def test_the_page_leads_with_what_ran_then_the_claims_then_tables_that_fit_1400_px():
  ran = [("command", "shiftbench seeds=[0,1,2]"), ("date", "2026-12-07 07:11 UTC"), ("shiftbench", "0.7.0")]
  page = report.render_html(WIDE, _board_rows(), {}, claims=_claims(), ran=ran)
  assert page.index("<h1>") < page.index("shiftbench seeds=[0,1,2]") < page.index("<table class='claims'>")
  assert page.index("<table class='claims'>") < page.index("<table class='board'>")
  claims_html = page[
    page.index("<table class='claims'>") : page.index("</table>", page.index("<table class='claims'>"))
  ]
  headers = re.findall(r"<th>(.*?)</th>", claims_html)
  assert headers[:5] == ["id", "lr", "verdict", "effect, mean [CI]", "n"]
  assert "<td class='pass'>✓</td>" in claims_html and "<td class='fail'>✗</td>" in claims_html
  # A claim whose rows did not run is no table row: it is named on one line under the table.
  assert "C5" not in claims_html and "<p class='notrun'>not run here: C5 (experiment=reproduce" in page
  widths = [float(w) for w in re.findall(r"<col style='width:([\d.]+)%'>", claims_html)]
  assert len(widths) == len(headers) and abs(sum(widths) - 100) < 0.5
  assert "table.claims{width:100%;table-layout:fixed}" in page  # wraps to the window, never scrolls sideways
  # The board in tables that fit 1400 px (12-px text: at most ~7 px a character, 13 px of padding and
  # border a cell), each starting with the columns that say which line it is.
  tables = re.findall(r"<table class='board'>(.*?)</table>", page, re.S)
  columns = [re.findall(r"<th>(.*?)</th>", t) for t in tables]
  for t in tables:
    cells = [re.findall(r"<t[hd]>(.*?)</t[hd]>", line) for line in re.findall(r"<tr>(.*?)</tr>", t)]
    width = sum(7 * max(len(html.unescape(c)) for c in col) + 13 for col in zip(*cells))
    assert width <= 1400 - 2 * 24, width  # the page's margins
  assert all(c[:6] == ["model", "pretrain", "finetune", "method", "finetune_lr", "seeds"] for c in columns)
  assert set().union(*columns) == (set(WIDE) - {"finetune_method", "method_setting"}) | {"method"}
  assert "wise0.5" in page and "overflow-x" not in page


def test_the_terminal_prints_the_key_columns_and_the_claims_in_under_100_characters(tmp_path):
  class Board:
    columns, rows, claims = WIDE, _board_rows(), _claims()

  text = terminal.summary(Board, tmp_path)
  table = text.split("\n\n")[0].splitlines()
  assert table[0].split() == [terminal.HEADERS.get(c, c) for c in terminal.KEY_COLUMNS]
  assert "consistency" not in "\n".join(table) and "205578" not in text
  # One `method` column (the row's method and setting), not two.
  assert [line.split()[3] for line in table[2:]] == ["plain", "plain", "plain", "wise0.5", "l2sp0.001"]
  assert max(len(line) for line in text.splitlines()[:-2]) <= 100, text
  assert "C3a" in text and "✗" in text and "not run here: C5 (experiment=reproduce" in text
  assert str(tmp_path / "leaderboard.md") in text and str(tmp_path / "rows.csv") in text


def test_columns_that_tell_groups_apart_are_kept_in_the_terminal():
  columns = ["model", "pretrain", "finetune", "canvas.size", "seeds", "in_acc", "consistency", "params"]
  text = terminal.key_table(columns, [["gap", "scratch", "full", "24", 3, "0.9", "0.8", 10]], {"in_acc", "consistency"})
  assert text.splitlines()[0].split() == ["model", "pretrain", "mode", "canvas.size", "seeds", "in_acc"]


def test_claims_of_several_comparable_groups_print_one_table_per_group():
  claims_ = _claims()
  for c, label in zip(claims_, ["k1 canvas.size=20", "k1 canvas.size=20", "k2 canvas.size=24"]):
    c.rows = f"[{label}] {c.rows}"
  text = terminal.claims_table(claims_)
  assert text.index("[k1 canvas.size=20]") < text.index("C3a") < text.index("[k2 canvas.size=24]") < text.index("C5")
  assert text.count("[k1 canvas.size=20]") == 1 and "] cnn_fc" not in text
