"""The headline figure (`headline.png`): retained invariance against the fine-tune learning rate.

The forgetting result is a curve over the fine-tune rate, never one number: per protocol group (one column
each, titled with what differs between the groups) and per model with a `translate` regime, panel A plots
each arm's invariance against the rate (seed mean, 95% t-interval band, collapsed seeds counted, the rates
where claim C3b holds starred) and panel B in-location accuracy against invariance, the trade-off every
fine-tuning choice sits on. `curve_table` holds the numbers; the plot only draws them.

No jax here: the leaderboard tool imports this module and must start without it.
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from shiftbench.claims import verdicts
from shiftbench.reporting import plots
from shiftbench.rows import comparison, reference, schema

# (pretrain regime, fine-tune mode): what each line is; the colours stay with the arm across panels.
ARMS: tuple[tuple[str, str], ...] = (
  ("scratch", "full"),
  ("translate", "last"),
  ("translate", "head"),
  ("translate", "full"),
)
_COLOURS = dict(zip(ARMS, ("#7f7f7f", "#1f77b4", "#2ca02c", "#d62728")))
INVARIANCE_LABEL = "invariance score (1 = as good everywhere)"
YLIM = (-0.2, 1.2)  # as the forgetting curves: an outlier over a tiny denominator must not set the scale
_STOP_KEYS = ("finetune.steps", "finetune.until_accuracy")  # described by `protocol_title` itself
# Legible where the page shows it, as every figure of the page (`plots.DISPLAY_DPI`): every text is at least
# 9 pt (`SMALL`); the SVG beside the PNG is the same figure as vectors.
SMALL, LABEL, TITLE = plots.SMALL, 10, 12
DISPLAY_DPI, PNG_DPI = plots.DISPLAY_DPI, plots.PNG_DPI
TITLE_TEXT = "Invariance kept after fine-tuning at one location, against the fine-tune learning rate"


def t_interval(values: Iterable[float]) -> tuple[float | None, float | None]:
  """Mean and half-width of the two-sided 95% t-interval; (None, None) for no values, half None for one."""
  x = np.asarray(list(values), float)
  if len(x) == 0:
    return None, None
  if len(x) < 2:
    return float(x[0]), None
  return float(x.mean()), verdicts.half_width(x)


class _Point(NamedTuple):
  """One point of a curve: a protocol group's row identity less the seed (every seed of one arm and rate)."""

  group: str
  row: schema.RowId  # its seed fixed at 0: the key covers every seed


def curve_table(rows: Iterable[Mapping[str, Any]], arms: tuple[tuple[str, str], ...] = ARMS) -> list[dict[str, Any]]:
  """One record per (protocol group, model, arm, fine-tune rate) of `arms`, plain rows only (a method's
  row is at `full` too; the methods have their own figure, `pareto.methods_pareto`): `seeds` (rows behind it),
  `collapsed` (seeds whose invariance is undefined: in-location accuracy not above chance), `n` (the rest),
  `invariance` (mean over those `n`; None when none is defined), `in_acc` (mean over every seed, collapsed
  ones included: they are part of the trade-off) and their t-interval half-widths `*_ci` (None below 2).
  Ordered as the rows came: groups, then models, then `arms`, then rates ascending. A model name behind two
  comparison keys in one group is two models, "name (key)"."""
  rows = [
    r
    for r in rows
    if schema.is_plain(r) and (r.get("pretrain"), r.get("finetune")) in arms and r.get(schema.LR) is not None
  ]
  # One model name with two architectures in one protocol (runs collected together) never pools: each is
  # its own model, named with its comparison key, as the leaderboard keeps them apart.
  keys: dict[tuple, set[str]] = defaultdict(set)
  for r in rows:
    keys[(r.get("protocol_key", ""), r["model"])].add(r.get("comparison_key", ""))
  by_key: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
  for r in rows:
    group, model = r.get("protocol_key", ""), r["model"]
    if len(keys[(group, model)]) > 1:
      model = f"{model} ({r.get('comparison_key', '')})"
    rid = schema.identity(r)._replace(model=model, finetune_lr=float(r[schema.LR]), seed=0)
    by_key[_Point(group, rid)].append(r)
  groups = {g: i for i, g in enumerate(dict.fromkeys(k.group for k in by_key))}
  models = {m: i for i, m in enumerate(dict.fromkeys(k.row.model for k in by_key))}

  def order(k: _Point) -> tuple:
    return groups[k.group], models[k.row.model], arms.index((k.row.pretrain, k.row.finetune)), k.row.finetune_lr

  out = []
  for key in sorted(by_key, key=order):
    members = by_key[key]
    inv = [float(m["invariance"]) for m in members if schema.defined(m.get("invariance"))]
    acc = [float(m["in_acc"]) for m in members if schema.defined(m.get("in_acc"))]
    record = {"group": key.group, **{k: getattr(key.row, k) for k in schema.DIMENSIONS}}
    record.update(seeds=len(members), collapsed=len(members) - len(inv), n=len(inv))
    record["invariance"], record["invariance_ci"] = t_interval(inv)
    record["in_acc"], record["in_acc_ci"] = t_interval(acc)
    out.append(record)
  return out


def protocol_title(settings: Mapping[str, Any]) -> str:
  """What ends a group's fine-tuning, from a row's `comparison` settings: "fixed budget: 600 steps" or
  "stopping rule: running mean ≥ 0.95 over 100 steps, cap 600"."""
  steps = settings.get("finetune.steps")
  threshold = settings.get("finetune.until_accuracy.threshold")
  if threshold is None:
    return f"fixed budget: {steps} steps"
  window = settings.get("finetune.until_accuracy.window")
  return f"stopping rule: running mean ≥ {threshold:g} over {window} steps, cap {steps}"


def group_titles(rows: Iterable[Mapping[str, Any]], most: int = 3) -> dict[str, str]:
  """protocol key -> column title: the stopping rule, then (up to `most`) the other protocol settings in
  which the groups differ, then the key itself (how the leaderboard names the group)."""
  settings = {}
  for r in rows:
    settings.setdefault(r.get("protocol_key", ""), comparison.protocol_part(r.get("comparison") or {}))
  differ = comparison.differing(settings.values()) if len(settings) > 1 else []
  differ = [n for n in differ if not n.startswith(_STOP_KEYS)]
  out = {}
  for key, s in settings.items():
    shown = [f"{n}={s.get(n)}" for n in differ[:most]] + (["…"] if len(differ) > most else [])
    out[key] = "\n".join([protocol_title(s), *([" ".join(shown)] if shown else []), f"protocol {key or '-'}"])
  return out


def _claim_model(entry: Mapping[str, Any]) -> str | None:
  """The model a claims entry is about: its `model`, else the name before ':' in `compared`."""
  if entry.get("model"):
    return str(entry["model"])
  found = re.match(r"\s*(?:\[[^\]]*\]\s*)?([^\s:\[]+):", str(entry.get("compared", "")))
  return found.group(1) if found else None


def _matching(claims_json: Iterable[Mapping[str, Any]], group: str, model: str | None, claim_id: str):
  for e in claims_json or []:
    if e.get("id") != claim_id or e.get("group", "") != group:
      continue
    if e.get("scratch_at") not in (None, "best_validation"):
      continue  # the same-rate comparison is another claim about the same arms; the figure shows one
    if model is not None and _claim_model(e) not in (None, model):
      continue
    yield e


def supported_rates(
  claims_json: Iterable[Mapping[str, Any]], group: str, model: str | None = None, claim_id: str = "C3b"
) -> list[float]:
  """The fine-tune rates at which `claim_id` is supported for protocol `group` (and `model`, where the
  entry names one), scratch taken at its best validation rate: what panel A stars."""
  rates = {
    float(e[schema.LR])
    for e in _matching(claims_json, group, model, claim_id)
    if e.get("outcome") == "supported" and e.get(schema.LR) is not None
  }
  return sorted(rates)


def scratch_rate(
  claims_json: Iterable[Mapping[str, Any]], group: str, model: str | None = None, claim_id: str = "C3b"
) -> float | None:
  """scratch's best validation rate as the claims entries give it (`scratch_lr`), or None."""
  for e in _matching(claims_json, group, model, claim_id):
    if e.get("scratch_lr") is not None:
      return float(e["scratch_lr"])
  return None


def _arms(table: list[dict[str, Any]], group: str, model: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
  out: dict[tuple[str, str], list[dict[str, Any]]] = {}
  for t in table:
    if (t["group"], t["model"]) == (group, model):
      out.setdefault((t["pretrain"], t["finetune"]), []).append(t)
  return out


def _clip(v: float | None) -> float:
  return math.nan if v is None else float(np.clip(v, *YLIM))


def _panel_rate(ax, arms, stars: list[float], scratch_lr: float | None) -> None:
  """Panel A: invariance against the rate, one line and band per arm, collapsed seeds written out."""
  low = YLIM[0] + 0.04 * (YLIM[1] - YLIM[0])
  for arm, points in arms.items():
    lr = np.array([p[schema.LR] for p in points])
    mean = np.array([_clip(p["invariance"]) for p in points])
    half = np.array([math.nan if p["invariance_ci"] is None else p["invariance_ci"] for p in points])
    colour = _COLOURS[arm]
    ax.plot(lr, mean, marker="o", markersize=4, color=colour, label="/".join(arm))
    band = np.isfinite(half) & np.isfinite(mean)
    ax.fill_between(lr, mean - half, mean + half, where=band, color=colour, alpha=0.15, linewidth=0)
    for p, y in zip(points, mean):
      if p["collapsed"]:
        at = low if math.isnan(y) else y
        if math.isnan(y):  # every seed collapsed: no mean, so a cross at the floor says where
          ax.plot(p[schema.LR], at, marker="x", color=colour, markersize=6)
        label, up = f"{p['collapsed']}/{p['seeds']} collapsed", 5 if math.isnan(y) else -10
        where = {"xytext": (0, up), "textcoords": "offset points", "ha": "center"}
        ax.annotate(label, (p[schema.LR], at), fontsize=SMALL, color=colour, **where)
  full = {p[schema.LR]: p["invariance"] for p in arms.get(("translate", "full"), [])}
  starred = [(lr, full[lr]) for lr in full if full[lr] is not None and any(math.isclose(lr, s) for s in stars)]
  if starred:
    xs, ys = zip(*starred)
    ys = [min(_clip(y) + 0.08, YLIM[1] - 0.02) for y in ys]
    ax.plot(xs, ys, linestyle="none", marker="*", markersize=10, color="goldenrod", label="C3b supported")
  scratch = {p[schema.LR]: p["invariance"] for p in arms.get(("scratch", "full"), [])}
  best = next((v for lr, v in scratch.items() if scratch_lr is not None and math.isclose(lr, scratch_lr)), None)
  if best is not None:
    label = f"scratch/full at its best validation rate ({schema.format_lr(scratch_lr)})"
    ax.axhline(_clip(best), color=_COLOURS["scratch", "full"], linestyle="--", linewidth=1, label=label)
  rates = sorted({p[schema.LR] for points in arms.values() for p in points})
  ax.set_xscale("log")
  ax.set_xticks(rates, [schema.format_lr(r) for r in rates], fontsize=SMALL)
  ax.minorticks_off()
  ax.margins(x=0.1)  # room for the "k/n collapsed" notes at the end rates
  ax.set_ylim(*YLIM)
  ax.axhline(0.0, color="grey", linewidth=0.5)
  ax.set_xlabel("fine-tune learning rate")
  ax.set_ylabel(INVARIANCE_LABEL, fontsize=LABEL)


def _panel_tradeoff(ax, arms) -> None:
  """Panel B: in-location accuracy against invariance, each arm's rates joined in rate order; a rate
  where every seed collapsed is a cross at the floor."""
  low = YLIM[0] + 0.04 * (YLIM[1] - YLIM[0])
  for arm, points in arms.items():
    shown = [p for p in points if p["in_acc"] is not None]
    x = [p["in_acc"] for p in shown]
    y = [_clip(p["invariance"]) for p in shown]
    colour = _COLOURS[arm]
    ax.plot(x, y, marker="o", markersize=4, color=colour, label="/".join(arm))
    for p, xi, yi in zip(shown, x, y):
      if math.isnan(yi):
        yi = low
        ax.plot(xi, yi, marker="x", color=colour, markersize=6)
      text = schema.format_lr(p[schema.LR]) + (f" ({p['collapsed']}/{p['seeds']} collapsed)" if p["collapsed"] else "")
      ax.annotate(text, (xi, yi), xytext=(3, 2), textcoords="offset points", fontsize=SMALL, color=colour)
  ax.set_ylim(*YLIM)
  ax.axhline(0.0, color="grey", linewidth=0.5)
  ax.set_xlabel("in-location accuracy")
  ax.set_ylabel(INVARIANCE_LABEL, fontsize=LABEL)
  ax.set_title("the trade-off (points labelled with the rate)", fontsize=LABEL)


def _legend(subfig, axes) -> None:
  """One legend under a group's panels (inside a panel it hid the stars): every label once."""
  handles: dict[str, Any] = {}
  for ax in axes:
    for handle, label in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(label, handle)
  if handles:
    subfig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=3, fontsize=LABEL, frameon=False)


def headline_figure(rows: Iterable[Mapping[str, Any]], claims_json: Iterable[Mapping[str, Any]] | None):
  """The headline figure (a matplotlib Figure), or None when no arm of a model with a `translate` regime
  has rows at 2 or more fine-tune rates (no curve to draw)."""
  rows = list(rows)
  table = curve_table(rows)
  translated = {(t["group"], t["model"]) for t in table if t["pretrain"] == "translate"}
  table = [t for t in table if (t["group"], t["model"]) in translated]
  rates: dict[tuple, set[float]] = defaultdict(set)
  for t in table:
    rates[(t["group"], t["model"], t["pretrain"], t["finetune"])].add(t[schema.LR])
  if not any(len(r) >= 2 for r in rates.values()):
    return None
  groups = list(dict.fromkeys(t["group"] for t in table))
  models = list(dict.fromkeys(t["model"] for t in table))
  titles = group_titles([r for r in rows if r.get("protocol_key", "") in groups])
  claims_json = list(claims_json or [])
  # A model whose rows all came from the shipped reference sets says so in its panel's title.
  sources = defaultdict(set)
  for r in rows:
    sources[r.get("model")].add(reference.source(r))
  fig = plots.new_figure(figsize=(12 * len(groups), 3.9 * len(models) + 1.3), layout="constrained", dpi=DISPLAY_DPI)
  subfigs = np.atleast_1d(fig.subfigures(1, len(groups), squeeze=False)).ravel()
  if len(groups) == 1:  # the title in words; the protocol's key is in the page's header
    words = [line for line in titles.get(groups[0], "").splitlines() if not line.startswith("protocol ")]
    fig.suptitle("\n".join([TITLE_TEXT, *words]), fontsize=TITLE)
  else:
    fig.suptitle(TITLE_TEXT, fontsize=TITLE)
  for subfig, group in zip(subfigs, groups):
    if len(groups) > 1:
      subfig.suptitle(titles.get(group, group), fontsize=LABEL)
    axes = subfig.subplots(len(models), 2, squeeze=False)
    for (ax_rate, ax_trade), model in zip(axes, models):
      arms = _arms(table, group, model)
      if not arms:
        ax_rate.axis("off")
        ax_trade.axis("off")
        continue
      _panel_rate(ax_rate, arms, supported_rates(claims_json, group, model), scratch_rate(claims_json, group, model))
      only = sources.get(model, set())
      shown = f"{model} ({next(iter(only))})" if len(only) == 1 and reference.THIS_RUN not in only else model
      ax_rate.set_title(f"{shown}: invariance against the rate", fontsize=LABEL)
      _panel_tradeoff(ax_trade, arms)
    _legend(subfig, axes.ravel())
  return fig


def save_headline(
  rows: Iterable[Mapping[str, Any]], claims_json: Iterable[Mapping[str, Any]] | None, path: str | os.PathLike
) -> Path | None:
  """Writes `headline_figure` to `path` (a PNG, a temp file renamed) and the same as an SVG beside it
  (`headline.svg`), and returns the PNG's path; None (and nothing written) when there is no curve to draw."""
  fig = headline_figure(rows, claims_json)
  if fig is None:
    return None
  return plots.save_figure(fig, path, also=(".svg",), bbox_inches="tight", dpi=PNG_DPI)
