"""The headline figure's numbers (`headline.curve_table`), its groups, the claims it marks, and the PNG it
writes, on synthetic rows: no jax, no training."""

import math
import re

import matplotlib.text
import pytest

from shiftbench.reporting import curves, headline, leaderboard, map_grid, plots
from shiftbench.reporting import page as report

FIXED = {"finetune.steps": 600, "finetune.until_accuracy": None}
RULE = {"finetune.steps": 600, "finetune.until_accuracy.threshold": 0.95, "finetune.until_accuracy.window": 100}


def _row(pretrain="translate", finetune="full", lr=1e-3, seed=0, invariance=0.5, in_acc=0.9, key="fixed", **extra):
  return {
    "model": "cnn_fc",
    "pretrain": pretrain,
    "finetune": finetune,
    "finetune_lr": lr,
    "seed": seed,
    "invariance": invariance,
    "in_acc": in_acc,
    "protocol_key": key,
    "comparison_key": f"{key}-cnn_fc",
    "comparison": RULE if key == "rule" else FIXED,
    **extra,
  }


def _grid(rates=(1e-4, 1e-3, 1e-2), keys=("fixed",)):
  return [
    _row(p, f, lr, s, invariance=0.2 * (s + 1), in_acc=0.8 + 0.01 * s, key=k)
    for k in keys
    for p, f in headline.ARMS
    for lr in rates
    for s in range(3)
  ]


def test_curve_table_gives_the_seed_mean_and_the_t_interval_half_width():
  rows = [_row(seed=s, invariance=v, in_acc=a) for s, (v, a) in enumerate([(0.2, 0.7), (0.4, 0.8), (0.6, 0.9)])]
  (record,) = headline.curve_table(rows)
  assert record["invariance"] == pytest.approx(0.4)
  assert record["invariance_ci"] == pytest.approx(4.303 * 0.2 / math.sqrt(3), rel=1e-3)
  assert record["in_acc"] == pytest.approx(0.8) and record["in_acc_ci"] == pytest.approx(4.303 * 0.1 / 3**0.5, 1e-3)
  assert (record["seeds"], record["n"], record["collapsed"]) == (3, 3, 0)
  assert headline.curve_table(rows[:1])[0]["invariance_ci"] is None  # one seed: a mean, no interval


def test_collapsed_seeds_are_counted_not_dropped():
  nan = float("nan")
  rows = [_row(seed=0, invariance=None, in_acc=0.1), _row(seed=1, invariance=0.3), _row(seed=2, invariance=nan)]
  rows += [_row(lr=1e-2, seed=s, invariance=None, in_acc=0.1) for s in range(3)]
  partial, gone = headline.curve_table(rows)
  assert (partial["seeds"], partial["collapsed"], partial["n"], partial["invariance"]) == (3, 2, 1, 0.3)
  assert partial["in_acc"] == pytest.approx((0.1 + 0.9 + 0.9) / 3)  # collapsed seeds are part of the trade-off
  assert gone["finetune_lr"] == 1e-2 and gone["collapsed"] == 3
  assert gone["invariance"] is None and gone["invariance_ci"] is None  # no mean over zero seeds


def test_rows_split_by_protocol_key_and_the_titles_say_how_fine_tuning_ended():
  table = headline.curve_table(_grid(keys=("fixed", "rule")))
  assert [t["group"] for t in table] == ["fixed"] * 12 + ["rule"] * 12
  assert all(t["seeds"] == 3 for t in table)  # the two protocols' seeds never pool
  assert [(t["pretrain"], t["finetune"]) for t in table[::3]][:4] == list(headline.ARMS)
  wider = [dict(r, comparison_key="wide") for r in _grid()]  # the same name, another architecture
  assert {t["model"] for t in headline.curve_table(_grid() + wider)} == {"cnn_fc (fixed-cnn_fc)", "cnn_fc (wide)"}
  titles = headline.group_titles(_grid(keys=("fixed", "rule")))
  assert titles["fixed"].splitlines()[0] == "fixed budget: 600 steps"
  assert titles["rule"].splitlines()[0] == "stopping rule: running mean ≥ 0.95 over 100 steps, cap 600"
  sizes = {"fixed": 32, "rule": 64}
  other = [
    dict(r, comparison={**FIXED, "canvas.size": sizes[r["protocol_key"]]}) for r in _grid(keys=("fixed", "rule"))
  ]
  assert "canvas.size=64" in headline.group_titles(other)["rule"]  # another difference is named too


def test_the_starred_rates_are_where_c3b_is_supported_against_scratch_at_its_best_rate():
  claims = [
    {"id": "C3b", "outcome": "supported", "group": "fixed", "finetune_lr": 1e-4, "scratch_at": "best_validation",
     "scratch_lr": 1e-3, "compared": "[fixed x=1] cnn_fc: translate/full - scratch/full"},
    {"id": "C3b", "outcome": "supported", "group": "fixed", "finetune_lr": 1e-3},  # no scratch_at: best rate
    {"id": "C3b", "outcome": "contradicted", "group": "fixed", "finetune_lr": 1e-2, "scratch_at": "best_validation"},
    {"id": "C3b", "outcome": "supported", "group": "fixed", "finetune_lr": 3e-3, "scratch_at": "same_rate"},
    {"id": "C3b", "outcome": "supported", "group": "rule", "finetune_lr": 3e-4},
    {"id": "C3b", "outcome": "supported", "group": "fixed", "finetune_lr": 3e-5, "model": "vgg16"},
    {"id": "C2", "outcome": "supported", "group": "fixed", "finetune_lr": 1e-5},
    {"id": "C3b", "outcome": "supported", "group": "fixed", "finetune_lr": None},
    {"id": "C3b", "verdict": "✓", "group": "fixed"},  # today's entries: no outcome, no rate
  ]  # fmt: skip
  assert headline.supported_rates(claims, "fixed", "cnn_fc") == [1e-4, 1e-3]
  assert headline.supported_rates(claims, "fixed", "vgg16") == [3e-5, 1e-3]
  assert headline.supported_rates(claims, "rule") == [3e-4]
  assert headline.supported_rates([], "fixed") == [] and headline.supported_rates(None, "fixed") == []
  assert headline.scratch_rate(claims, "fixed", "cnn_fc") == 1e-3
  assert headline.scratch_rate(claims, "rule", "cnn_fc") is None


def test_save_headline_writes_a_png_and_returns_none_for_a_single_rate(tmp_path):
  rows = _grid(keys=("fixed", "rule"))
  rows[0]["invariance"] = None
  claims = [{"id": "C3b", "outcome": "supported", "group": "fixed", "finetune_lr": 1e-4, "scratch_lr": 1e-3}]
  path = headline.save_headline(rows, claims, tmp_path / "out" / "headline.png")
  assert path == tmp_path / "out" / "headline.png"
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
  # The temp files were renamed; the vector version lies beside the PNG.
  assert sorted(p.name for p in path.parent.iterdir()) == ["headline.png", "headline.svg"]
  assert "<svg" in (path.parent / "headline.svg").read_text()[:1000]
  assert headline.save_headline(_grid(rates=(1e-3,)), claims, tmp_path / "one.png") is None
  assert not (tmp_path / "one.png").exists()
  scratch_only = [r for r in rows if r["pretrain"] == "scratch"]
  assert headline.save_headline(scratch_only, [], tmp_path / "scratch.png") is None  # no translate arm


def test_the_headline_is_legible_where_the_page_shows_it_and_titled_in_words():
  fig = headline.headline_figure(_grid(), [])
  fig.canvas.draw()
  texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
  small = {t.get_text(): t.get_fontsize() for t in texts if t.get_fontsize() < 9}
  assert not small, small  # every label at least 9 pt, at the page's 96 px per inch
  title = fig.get_suptitle()
  assert title.startswith(headline.TITLE_TEXT) and "fixed budget: 600 steps" in title and "protocol" not in title
  assert fig.get_figwidth() * headline.DISPLAY_DPI >= 1000  # shown about 1100 px wide: legible, fits 1400


def test_a_model_shown_only_by_reference_rows_says_so_in_its_panel_title():
  own = _grid()
  shipped = [{**r, "model": "gap", "reference": "reference 0.7.0 2026-12-07"} for r in _grid()]
  fig = headline.headline_figure(own + shipped, [])
  titles = [t.get_text() for t in fig.findobj(matplotlib.text.Text) if "invariance against the rate" in t.get_text()]
  assert sorted(titles) == [
    "cnn_fc: invariance against the rate",
    "gap (reference 0.7.0 2026-12-07): invariance against the rate",
  ]


# Every regime and mode of `reproduce` (10 columns) for two models: the widest grid a shipped preset makes.
_COLUMNS = [("scratch", "full")] + [
  (p, f) for p in ("fixed", "random_crop", "translate") for f in ("last", "head", "full")
]


def _wide_rows(steps=600):
  curve = [{"step": t, "invariance": 0.9 - t / steps, "in_acc": 0.15 if t == 0 else 0.9} for t in (0, 10, 20, 50)]
  curve += [{"step": t, "invariance": 0.5, "in_acc": 0.9} for t in range(100, steps + 1, max(steps // 20, 100))]
  grid = {"acc": [[0.5] * 7] * 7, "ys": list(range(0, 21, 3)), "xs": list(range(0, 21, 3))}
  return [
    _row(p, f, lr, model=model, off_acc=0.5, chance=0.1, curve=curve, location_map=grid, finetune_location=[9, 9])
    for model in ("cnn_fc", "resnet18_blurpool")
    for p, f in _COLUMNS
    for lr in (1e-4, 1e-3, 1e-2)
  ]


@pytest.mark.parametrize("figure", [map_grid.location_map_figure, curves.forgetting_figure], ids=["maps", "curves"])
@pytest.mark.parametrize("steps", [600, 20000])
def test_the_location_maps_and_forgetting_curves_are_legible_where_the_page_shows_them(figure, steps):
  fig = figure(leaderboard.aggregate(_wide_rows(steps)))
  fig.canvas.draw()
  texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
  small = {t.get_text(): t.get_fontsize() for t in texts if t.get_fontsize() < 9}
  assert not small, small  # every label at least 9 pt, at the page's 96 px per inch
  assert fig.dpi == plots.DISPLAY_DPI and fig.get_figwidth() <= plots.PAGE_WIDTH  # 10 columns wrap, not shrink
  for ax in fig.axes:  # no two tick labels of an axis run into each other, however long the curve
    boxes = [t.get_window_extent() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in ax.get_xticklabels()]


def test_the_page_shows_the_location_maps_and_curves_at_the_size_they_were_drawn_for(tmp_path):
  report.write_report(_board(_wide_rows()), tmp_path)
  page = (tmp_path / "index.html").read_text()
  for name, alt in [("location_maps", "Location maps"), ("forgetting_curves", "Invariance over fine-tune steps")]:
    png_width = int.from_bytes((tmp_path / f"{name}.png").read_bytes()[16:20], "big")
    shown = int(re.search(rf'alt="{alt}[^"]*" width="(\d+)"', page).group(1))
    assert shown == round(png_width * plots.DISPLAY_DPI / plots.PNG_DPI)  # 1 pt of the figure = 1 pt shown
    assert shown <= 1400  # inside the page's column: not scaled down to fit


def test_the_forgetting_curves_draw_one_line_per_rate_and_mark_the_probe(tmp_path):
  curve = [{"step": 0, "invariance": 0.8, "from": "probe"}, *({"step": s, "invariance": 0.5} for s in (10, 50, 150))]
  arm = {"model": "cnn_fc", "pretrain": "translate", "finetune": "full", "protocol_key": "fixed", "curve": curve}
  entries = [{**arm, "finetune_lr": lr} for lr in (1e-3, 1e-2)]
  fig = curves.forgetting_figure(entries)
  (ax,) = fig.axes  # one model, one arm: one panel holding both rates
  assert ax.get_xscale() == "symlog" and len([line for line in ax.lines if line.get_marker() == "o"]) == 2
  (legend,) = fig.legends
  assert [t.get_text() for t in legend.get_texts()] == ["lr 0.001", "lr 0.01", "step 0: the last row's probe"]
  probes = [line for line in ax.lines if line.get_marker() == "D"]
  assert [list(line.get_xdata()) for line in probes] == [[0], [0]]
  assert probes[0].get_markeredgecolor() != probes[1].get_markeredgecolor()  # coloured by rate
  rows = [_row(seed=s, off_acc=0.5, curve=[{"step": 0, "invariance": 0.8, "from": "probe"}, curve[1]]) for s in (0, 1)]
  (entry,) = leaderboard.aggregate(rows)  # the seed-mean curve keeps where its step 0 came from
  assert entry["curve"][0]["from"] == "probe" and "from" not in entry["curve"][1]
  assert curves.forgetting_curves(entries, tmp_path / "curves.png").stat().st_size > 1000


def _board(rows):
  entries = leaderboard.aggregate(rows)
  return leaderboard.Board(["model"], [[e["model"]] for e in entries], "", "", entries, [], rows)


def test_the_page_shows_the_headline_first_and_drops_a_stale_one(tmp_path):
  rows = [
    dict(r, off_acc=0.5, curve=[{"step": 0, "invariance": 0.1}, {"step": 10, "invariance": 0.2}]) for r in _grid()
  ]
  report.write_report(_board(rows), tmp_path)
  page = (tmp_path / "index.html").read_text()
  top = page.index(f"<img alt='{headline.TITLE_TEXT}'")
  assert page.index("<table class='ran'>") < top < page.index("Claims from the literature")  # what ran, then it
  assert "<a href='headline.svg'>headline.svg</a>" in page and (tmp_path / "headline.svg").is_file()
  png_width = int.from_bytes((tmp_path / "headline.png").read_bytes()[16:20], "big")
  shown = int(re.search(r"width='(\d+)' src='data:image/png", page[top:]).group(1))
  assert shown == round(png_width * headline.DISPLAY_DPI / headline.PNG_DPI)  # 1 pt of the figure = 1 pt shown
  titles = re.findall(r"<h2>(.*?)</h2>", page)
  assert titles[titles.index("Leaderboard") + 1 :] == [
    "Location maps (models x pretrain / fine-tune)",
    "Invariance over fine-tune steps",
  ]
  one_rate = [r for r in rows if r["finetune_lr"] == 1e-3]
  report.write_report(_board(one_rate), tmp_path)
  assert not (tmp_path / "headline.png").exists()  # an earlier board's figure would contradict this one
  assert not (tmp_path / "headline.svg").exists()
  assert headline.TITLE_TEXT not in (tmp_path / "index.html").read_text()


def _method_rows(rows):
  """A method's row (at `full`, like plain full) beside each translate/full row, far off its numbers."""
  out = []
  for r in rows:
    if (r["pretrain"], r["finetune"]) == ("translate", "full"):
      out += [dict(r, finetune_method="wise", method_setting=0.5, invariance=9.0, in_acc=0.1)]
      out += [dict(r, finetune_method="lpft", invariance=-9.0, comparison_key="lpft")]
  return out


def test_forgetting_curve_points_near_chance_are_hollow_and_named_in_the_legend():
  from shiftbench.reporting import plots

  assert plots.near_chance(0.19, 0.1) and not plots.near_chance(0.28, 0.1) and not plots.near_chance(None, 0.1)
  rows = [  # the last row's probe of two seeds: in-location accuracy 0.17 and 0.21, invariance 1.1
    _row(
      seed=s,
      off_acc=0.2,
      chance=0.1,
      curve=[{"step": 0, "invariance": 1.1, "in_acc": a}, {"step": 10, "invariance": 0.5, "in_acc": 0.9}],
    )
    for s, a in enumerate((0.17, 0.21))
  ]
  (entry,) = leaderboard.aggregate(rows)
  assert [p["in_acc"] for p in entry["curve"]] == pytest.approx([0.19, 0.9])  # the seed mean, step by step
  fig = curves.forgetting_figure([entry])
  (ax,) = fig.axes
  (hollow,) = [line for line in ax.lines if line.get_markerfacecolor() == "white"]
  assert list(hollow.get_xdata()) == [0] and list(hollow.get_ydata()) == [1.1]
  (curve,) = [line for line in ax.lines if line.get_marker() == "o" and line.get_linestyle() != "None"]
  assert list(curve.get_markevery()) == [1]  # filled only where in-location accuracy is not near chance
  (legend,) = fig.legends
  assert plots.NEAR_CHANCE_LABEL in [t.get_text() for t in legend.get_texts()]


def test_the_headline_and_the_forgetting_curves_draw_plain_rows_only():
  rows = _grid()
  assert headline.curve_table(rows + _method_rows(rows)) == headline.curve_table(rows)
  curve = [{"step": 0, "invariance": 0.8}, {"step": 10, "invariance": 0.5}]
  arm = {"model": "cnn_fc", "pretrain": "translate", "finetune": "full", "protocol_key": "fixed", "curve": curve}
  entries = [{**arm, "finetune_lr": 1e-3, "finetune_method": "plain"}]
  entries += [{**arm, "finetune_lr": 1e-3, "finetune_method": "l2sp", "method_setting": 0.01}]
  (ax,) = curves.forgetting_figure(entries).axes
  assert len([line for line in ax.lines if line.get_marker() == "o"]) == 1  # not the method's line too
