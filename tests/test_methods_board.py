"""The methods board on synthetic rows: ranked by off-location accuracy within plain full's accuracy bar,
the paired off_acc gain over plain full, retained invariance per seed, L2-SP's β* chosen on validation
(plain full's collapsed seeds out of its bar), its files, the Pareto figure and the page section, and the
terminal's short tables. No jax, no training."""

import csv
import json
import re

import pytest

from shiftbench.claims import arms
from shiftbench.claims import methods as methods_claims
from shiftbench.reporting import leaderboard, methods_board, pareto, terminal

FC = {"_target_": "shiftbench.models.ShiftNet", "head": "fc", "fc_hidden": [256, 256]}
LR = 0.01


def _row(mode, seed, invariance, in_acc, method="plain", alpha=None, beta=None, regime="translate", **extra):
  """A row whose off-location accuracy is the one its invariance and in_acc make at chance 0.1, unless
  `extra` gives one."""
  setting = alpha if alpha is not None else beta
  return {
    "model": "cnn_fc",
    "architecture": FC,
    "pretrain": regime,
    "finetune": mode,
    "finetune_method": method,
    "method_setting": setting,
    "finetune_lr": LR,
    "seed": seed,
    "invariance": invariance,
    "in_acc": in_acc,
    "off_acc": 0.1 if invariance is None else 0.1 + invariance * (in_acc - 0.1),
    "chance": 0.1,
    "protocol_key": "k",
    "comparison_key": f"k-{method}",
    "datasets": "A -> B",
    **extra,
  }


def _rows(lines, seeds=(0, 1, 2)):
  """`lines`: (mode, method, setting, invariance, in_acc) each; a seed spread of 0.01 on both numbers."""
  out = []
  for mode, method, setting, inv, acc in lines:
    alpha, beta = (setting, None) if method == "wise" else (None, setting)
    for s in seeds:
      out.append(_row(mode, s, inv + 0.01 * s, acc + 0.001 * s, method, alpha, beta))
  return out


PLAIN = [("last", "plain", None, 0.8, 0.6), ("head", "plain", None, 0.6, 0.86), ("full", "plain", None, 0.3, 0.9)]


def _table(rows):
  (table,) = methods_board.tables(rows)
  return table


def test_lines_below_plain_fulls_accuracy_bar_rank_after_whatever_their_off_location_accuracy():
  rows = _rows(PLAIN + [("full", "lpft", None, 0.5, 0.89), ("full", "wise", 0.5, 0.7, 0.75)])
  rows += _rows([("full", "mine", None, 0.4, 0.881)])  # a user's method, just within the bar (0.9 - 0.02)
  table = _table(rows)
  # plain head (off_acc 0.556), wise0.5 (0.555) and plain last (0.5) keep more off-location accuracy than
  # plain full (0.34) by learning B less: unranked, after the ranked lines (by off_acc: 0.495, 0.412, 0.34).
  assert [(x.method, x.rank) for x in table.lines] == [
    ("lpft", 1),
    ("mine", 2),
    ("plain full", 3),
    ("plain head", None),
    ("wise0.5", None),
    ("plain last", None),
  ]
  lpft = table.line("lpft")
  assert lpft.off_gain.mean == pytest.approx(0.1 + 0.5 * 0.79 - (0.1 + 0.3 * 0.8), abs=2e-3) and lpft.keeps_more
  assert methods_board.KEEPS_MORE in lpft.notes and not table.line("plain full").keeps_more
  assert not table.line("wise0.5").keeps_more  # more off_acc, but below the bar
  below = table.line("plain last")
  assert below.above_bar is False and methods_board.BELOW_BAR in below.notes and table.line("mine").above_bar
  assert table.bar == pytest.approx(0.901 - 0.02)
  assert methods_board.rows(table)[5][:2] == ["-", "plain last"] and methods_board.rows(table)[0][:2] == [1, "lpft"]
  md = methods_board.markdown([table])
  assert "## cnn_fc · translate · lr 0.01 · protocol k" in md and "below the accuracy bar" in md


def test_without_plain_full_nothing_is_ranked():
  rows = _rows([PLAIN[0], ("full", "lpft", None, 0.5, 0.89)])
  table = _table(rows)
  assert table.bar is None and {x.rank for x in table.lines} == {None} and "no accuracy bar" in table.summary


def test_retained_is_the_per_seed_ratio_to_plain_last():
  rows = []
  for s, (last, lpft) in enumerate([(0.8, 0.4), (0.4, 0.4), (0.8, 0.4)]):
    rows += [_row("last", s, last, 0.6), _row("full", s, 0.3, 0.9), _row("full", s, lpft, 0.9, "lpft")]
  line = _table(rows).line("lpft")
  # per seed 0.5, 1.0, 0.5: mean 2/3 (the ratio of the seed means would be 0.4 / (2/3) = 0.6)
  assert line.retained.mean == pytest.approx(2 / 3) and line.retained.n == 3
  assert _table(rows).line("plain last").retained.mean == pytest.approx(1.0)
  rows[0]["invariance"] = 0.0  # seed 0's plain last has no invariance to retain: that seed is undefined
  retained = _table(rows).line("lpft").retained
  assert retained.mean == pytest.approx((1.0 + 0.5) / 2) and retained.n == 2


def _l2sp_rows(test_inv, val_acc, val_inv, full_val=0.9):
  rows = []
  for s in range(3):
    rows += [
      _row("last", s, 0.8, 0.6, val_in_acc=0.6),
      _row("full", s, 0.3, 0.9, val_in_acc=full_val),
    ]
    rows += [
      _row("full", s, test_inv[b], 0.9, "l2sp", beta=b, val_in_acc=val_acc[b], val_invariance=val_inv[b])
      for b in test_inv
    ]
  return rows


BETAS = (0.001, 0.01, 0.1, 1.0)
VAL_ACC = dict(zip(BETAS, (0.9, 0.89, 0.85, 0.5)))  # 0.1 and 1 below plain full's val_in_acc (0.9) - 0.02
VAL_INV = dict(zip(BETAS, (0.4, 0.6, 0.9, 0.95)))
TEST_INV = dict(zip(BETAS, (0.5, 0.6, 0.7, 0.8)))


def _beta(rows):
  return methods_claims.best_beta(arms.Arms(rows), "cnn_fc", "translate", LR)


def test_beta_star_is_chosen_on_validation_never_on_test():
  assert _beta(_l2sp_rows(TEST_INV, VAL_ACC, VAL_INV)) == (0.01, "", True)
  # Test numbers never move it: β=0.001 and β=0.1 far ahead on test invariance.
  assert _beta(_l2sp_rows({**TEST_INV, 0.001: 5.0, 0.1: 9.0}, VAL_ACC, VAL_INV)).beta == 0.01
  # Validation does: 0.1 within the bar on validation now, with the highest val_invariance.
  assert _beta(_l2sp_rows(TEST_INV, {**VAL_ACC, 0.1: 0.885}, VAL_INV)).beta == 0.1
  assert _beta(_l2sp_rows(TEST_INV, VAL_ACC, {**VAL_INV, 0.001: 0.7})).beta == 0.001
  assert _beta(_l2sp_rows(TEST_INV, VAL_ACC, {**VAL_INV, 0.001: 0.6})).beta == 0.001  # ties: the smaller β
  # None within the bar: the highest val_in_acc, said in the note.
  best = _beta(_l2sp_rows(TEST_INV, VAL_ACC, VAL_INV, full_val=0.99))
  assert best.beta == 0.001 and not best.qualified and "highest val_in_acc" in best.note
  no_val = [{k: v for k, v in r.items() if k != "val_in_acc"} for r in _l2sp_rows(TEST_INV, VAL_ACC, VAL_INV)]
  assert _beta(no_val).beta is None and "val_in_acc" in _beta(no_val).note


def test_the_board_marks_the_same_beta_star_as_claim_m3():
  rows = _l2sp_rows(TEST_INV, VAL_ACC, VAL_INV)
  table = _table(rows)
  assert [x.method for x in table.lines if x.best_val] == ["l2sp0.01"]
  assert table.best.beta == 0.01 and "β* = 0.01" in table.summary
  assert "l2sp0.01 β*" in [r[1] for r in methods_board.rows(table)]
  moved = _table(_l2sp_rows(TEST_INV, {**VAL_ACC, 0.1: 0.885}, VAL_INV))
  assert [x.method for x in moved.lines if x.best_val] == ["l2sp0.1"]


def test_tables_per_group_and_only_with_method_rows():
  plain = _rows(PLAIN)
  assert methods_board.tables(plain) == []  # no method rows: no board
  rows = plain + _rows([("full", "lpft", None, 0.5, 0.89)])
  rows += [dict(r, finetune_lr=0.001) for r in plain]  # plain last + full at another rate: a table too
  rows += [dict(r, pretrain="scratch") for r in _rows([PLAIN[2]])]  # scratch never has one
  rows += [dict(r, pretrain="fixed") for r in _rows([PLAIN[0]])]  # last without full, no method: none
  found = methods_board.tables(rows)
  assert [(t.pretrain, t.finetune_lr) for t in found] == [("translate", 0.001), ("translate", LR)]
  assert [x.method for x in found[0].lines] == ["plain full", "plain head", "plain last"]  # below the bar: by off_acc


def test_write_leaderboard_writes_the_board_and_removes_a_stale_one(tmp_path):
  wise = [("full", "wise", a, 0.8 - 0.5 * a, 0.6 + 0.3 * a) for a in (0.0, 0.5, 1.0)]
  rows = _l2sp_rows(TEST_INV, VAL_ACC, VAL_INV) + _rows([PLAIN[1], *wise])
  leaderboard.write_leaderboard(rows, tmp_path, figures=False)
  with open(tmp_path / "methods.csv", newline="") as f:
    lines = list(csv.DictReader(f))
  assert {line["method"] for line in lines} >= {"plain last", "plain full", "wise0.5", "l2sp0.01"}
  star = next(line for line in lines if line["best_val"] == "True")
  assert star["method"] == "l2sp0.01" and star["method_setting"] == "0.01" and star["setting_name"] == ""
  (entry,) = json.loads((tmp_path / "methods.json").read_text())
  assert entry["l2sp_best_beta"] == 0.01 and entry["accuracy_bar"] == pytest.approx(0.88)
  assert [x["rank"] for x in entry["lines"]][0] == 1 and set(entry["lines"][0]["in_acc"]) == {"mean", "ci95", "n"}
  assert (tmp_path / "methods.md").read_text().startswith("# Fine-tuning methods")
  leaderboard.write_leaderboard([r for r in rows if r["finetune_method"] == "plain"], tmp_path, figures=False)
  assert not any((tmp_path / name).exists() for name in methods_board.FILES)


# What a run writes for WiSE-FT (`Method.describe`), attached to its rows when results.json is read.
WISE_INFO = {"name": "wise", "title": "WiSE-FT", "colour": "#ff7f0e", "setting_name": "alpha", "setting_symbol": "α"}


def _pareto_rows(described=True):
  wise = [("full", "wise", a, 0.8 - 0.5 * a, 0.6 + 0.3 * a) for a in (1.0, 0.0, 0.5)]  # not in α order
  rows = _rows(PLAIN + wise + [("full", "lpft", None, 0.5, 0.89)])
  return [{**r, "method_info": WISE_INFO} if described and r["finetune_method"] == "wise" else r for r in rows]


def test_the_pareto_figure_has_a_point_per_line_the_wise_path_and_the_accuracy_bar():
  table = _table(_pareto_rows())
  fig = pareto.methods_figure([table])
  ax = fig.axes[0]
  assert len(ax.containers) == len(table.lines)  # one errorbar per method and setting
  labels = {t.get_text() for t in ax.texts}
  assert {"plain last", "plain full", "lpft", "wise0", "wise0.5", "wise1"} <= labels
  (path,) = [line for line in ax.lines if line.get_label() == "WiSE-FT, α ascending"]
  assert list(path.get_xdata()) == pytest.approx([0.601, 0.751, 0.901])  # joined in α order: 0, 0.5, 1
  assert path.get_color() == WISE_INFO["colour"]  # the method's own, from its description
  (bar,) = [line for line in ax.lines if line.get_linestyle() == "--"]
  assert list(bar.get_xdata()) == pytest.approx([table.bar] * 2)
  # Rows of a file without descriptions (0.6.0's): the same points and path, named by the method alone.
  ax = pareto.methods_figure([_table(_pareto_rows(described=False))]).axes[0]
  assert len([line for line in ax.lines if line.get_label() == "wise, setting ascending"]) == 1


def test_the_page_shows_the_methods_section_after_the_claims_and_writes_the_pareto_png(tmp_path):
  rows = _pareto_rows()
  leaderboard.write_leaderboard(rows, tmp_path)
  page = (tmp_path / "index.html").read_text()
  assert (tmp_path / "methods_pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  titles = re.findall(r"<h2>(.*?)</h2>", page)
  assert titles[titles.index("Claims from the literature") + 1] == "Fine-tuning methods"
  section = page[page.index("<h2>Fine-tuning methods</h2>") : page.index("<h2>Leaderboard</h2>")]
  assert "<h3>cnn_fc · translate · lr 0.01 · protocol k</h3>" in section and section.count("data:image/png") == 1
  assert "<td>wise0.5</td>" in section and "<th>retained</th>" in section
  leaderboard.write_leaderboard([r for r in rows if r["finetune_method"] == "plain"], tmp_path)
  assert not (tmp_path / "methods_pareto.png").exists()
  assert "Fine-tuning methods</h2>" not in (tmp_path / "index.html").read_text()


def test_the_terminal_prints_the_methods_tables_after_the_key_table(tmp_path):
  board = leaderboard.build(_pareto_rows())
  text = terminal.summary(board, tmp_path)
  assert text.index("mode") < text.index("Fine-tuning methods") < text.index("Claims from the literature")
  section = text[text.index("Fine-tuning methods") : text.index("Claims from the literature")]
  assert "[cnn_fc · translate · lr 0.01 · protocol k]" in section
  header = next(line for line in section.splitlines() if line.startswith("method"))
  assert header.split() == ["method", "rank", "in_acc", "off_acc", "invariance"]
  lpft = next(line for line in section.splitlines() if line.startswith("lpft"))
  assert lpft.split()[1] == "1" and "[" in lpft  # ranked first, with its interval
  assert str(tmp_path / "methods.md") in text
  assert max(len(line) for line in section.splitlines()) <= 100
  plain = leaderboard.build(_rows(PLAIN))
  assert "Fine-tuning methods" not in terminal.summary(plain, tmp_path)


def test_beta_stars_accuracy_bar_ignores_a_collapsed_seed_of_plain_full():
  # Plain full: four healthy seeds at val_in_acc 0.95, and seed 4 collapsed to chance (invariance
  # undefined) at 0.2. Over every seed its mean is 0.80, so β = 0.1 (0.85) would be within the bar with the
  # highest val_invariance; over the healthy seeds the bar is 0.93, and β* is 0.001.
  rows = []
  for s in range(5):
    collapsed = s == 4
    rows += [
      _row("last", s, 0.8, 0.6, val_in_acc=0.6),
      _row("full", s, None if collapsed else 0.3, 0.2 if collapsed else 0.95, val_in_acc=0.2 if collapsed else 0.95),
    ]
    rows += [
      _row("full", s, 0.4, 0.94, "l2sp", beta=0.001, val_in_acc=0.94, val_invariance=0.4),
      _row("full", s, 0.7, 0.85, "l2sp", beta=0.1, val_in_acc=0.85, val_invariance=0.7),
    ]
  best = _beta(rows)
  assert best == (0.001, "", True)
  assert [x.method for x in _table(rows).lines if x.best_val] == ["l2sp0.001"]  # the board marks the same
  m3 = next(c for c in methods_claims.claims(arms.Arms(rows)) if c.id == "M3")
  assert m3.method_setting == 0.001
  # With seed 4 healthy at the same accuracy the bar would be the same mean: the bar reads numbers, not seeds.
  healthy = [{**r, "invariance": 0.3} if r["invariance"] is None else r for r in rows]
  assert _beta(healthy).beta == 0.1  # 0.80 - 0.02 = 0.78: 0.1 qualifies when the seed counts


def test_the_pareto_figure_is_in_location_against_off_location_accuracy():
  table = _table(_pareto_rows())
  ax = pareto.methods_figure([table]).axes[0]
  assert ax.get_xlabel() == "in-location accuracy" and ax.get_ylabel() == "off-location accuracy"
  lpft = table.line("lpft")
  (point,) = [t for t in ax.texts if t.get_text() == "lpft"]
  assert point.xy == pytest.approx((lpft.in_acc.mean, lpft.off_acc.mean))
  (edge,) = [line for line in ax.lines if line.get_linestyle() == ":"]  # plain full's off_acc + δ
  assert list(edge.get_ydata()) == pytest.approx([table.line("plain full").off_acc.mean + 0.02] * 2)


def test_a_controls_setting_is_chosen_by_validation_off_location_accuracy_not_by_the_ratio():
  """ρ* (replay), like β*, is chosen among the settings within the accuracy bar on validation by validation
  off-location accuracy: ρ = 0.5 has the higher validation invariance (0.60 against 0.59) only because it
  learns B less (0.881 against 0.9), and its off-location accuracy is lower (0.569 against 0.572)."""
  rows = []
  for s in range(3):
    rows += [_row("last", s, 0.8, 0.6, val_in_acc=0.6), _row("full", s, 0.3 + 0.01 * s, 0.9, val_in_acc=0.9)]
    rows += [
      _row("full", s, 0.5 + 0.01 * s, 0.9, "replay", beta=0.25, val_in_acc=0.9, val_invariance=0.59),
      _row("full", s, 0.6 + 0.01 * s, 0.88, "replay", beta=0.5, val_in_acc=0.881, val_invariance=0.6),
    ]
  best = methods_claims.best_setting(arms.Arms(rows), "cnn_fc", "translate", LR, "replay")
  assert best == (0.25, "", True)
  claims = {c.id: c for c in methods_claims.claims(arms.Arms(rows))}
  assert claims["M4"].method_setting == 0.25 and claims["M4"].outcome == "supported"  # off_acc +0.16, in_acc 0
  # Controls that did not run list nothing (M1-M3 keep their not-run entries).
  assert not {"M2b", "M3b", "M3c", "M5", "M6", "M7", "M8"} & set(claims) and claims["M1"].outcome == "not_run"


def test_l2sp_under_sgd_is_judged_against_its_own_beta_zero_and_plain_sgd_against_adam():
  rows = []
  for s in range(3):
    rows += [_row("full", s, 0.3 + 0.01 * s, 0.9, val_in_acc=0.9)]
    rows += [_row("full", s, 0.5 + 0.01 * s, 0.7, "l2sp_sgd", beta=0.0, val_in_acc=0.7, val_invariance=0.5)]
    rows += [_row("full", s, 0.6 + 0.01 * s, 0.7, "l2sp_sgd", beta=0.1, val_in_acc=0.7, val_invariance=0.6)]
  claims = {c.id: c for c in methods_claims.claims(arms.Arms(rows))}
  # β* among β > 0, its bar plain SGD's own val_in_acc (0.7, not Adam's 0.9, which no SGD row reaches).
  assert claims["M3c"].method_setting == 0.1 and claims["M3c"].outcome == "supported"
  assert "plain SGD" in claims["M3c"].rows
  # Plain SGD keeps more off_acc than Adam but gives up 0.2 in-location accuracy: the guard says no.
  assert claims["M8"].outcome == "contradicted" and "in_acc difference -0.200" in claims["M8"].note
