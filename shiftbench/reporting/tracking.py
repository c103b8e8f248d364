"""Experiment tracking with Weights & Biases: one wandb run per results row, one for the leaderboard.

What wandb's own UI expects (grouping, filtering, mean ± std over seeds, parallel coordinates) needs one
run per thing measured. So each row (model x pretrain regime x fine-tune mode x seed) is its own run:
  group     the experiment: the multirun sweep directory, else the run directory (`logger.group` overrides);
  job_type  the fine-tune mode (`last`, `head`, `full`);
  config    the row's identity at the top (`model`, `pretrain`, `finetune`, `seed`, `comparison_key`), the
            settings behind the key (`comparison`, dotted names), the row's `architecture` and the whole
            resolved config under `cfg`;
  history   the fine-tune curve (`curve/in_acc`, `curve/off_acc`, `curve/invariance`) against
            `finetune_step`, so wandb draws it and averages it over a group;
  summary   every final scalar metric (undefined ones left out, so group means count only defined values),
            and the location map as a `wandb.Image`.
The experiment itself is one more run in the same group, `job_type=leaderboard`, open from start to finish:
it holds the leaderboard, the claims report and the tidy rows as tables, and the figures.

Offline runs never touch the network (upload later with `wandb sync <run dir>/wandb/offline-run-*`);
`online` falls back to offline with a one-line warning when the wandb server is unreachable (probed for
3 s), instead of waiting for wandb's own 60 s timeout and failing;
`disabled` makes every call a no-op, which the tests use. A tracking failure never loses results: the
files under the run directory are written first and are the record.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
from pathlib import Path
from typing import Any

from shiftbench.infra import network
from shiftbench.rows import schema

log = logging.getLogger(__name__)
MODES = ("online", "offline", "disabled")
GROUP_MAX = 128  # wandb's limit on a group name


def row_config(config: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
  """A row run's wandb config: identity first (what a user groups and filters by), then the settings."""
  identity = {k: row.get(k) for k in (*schema.IDENTITY, "comparison_key")}
  architecture = row.get("architecture") or (config.get("model") or {}).get(row["model"])
  return {
    **identity,
    "comparison": dict(row.get("comparison") or {}),
    "architecture": architecture,
    "finetune_steps": row.get("finetune_steps"),
    "cfg": config,
  }


def _reachable(url: str, timeout: float = 3.0) -> bool:
  """Whether a TCP connection to the URL's host opens within `timeout` seconds."""
  parts = urllib.parse.urlsplit(url if "://" in url else f"https://{url}")
  port = parts.port or (80 if parts.scheme == "http" else 443)
  return bool(parts.hostname) and network.reachable(parts.hostname, port, timeout)


class WandbTracker:
  """One wandb run per results row plus one `job_type=leaderboard` run per experiment, in one group."""

  def __init__(
    self,
    mode: str = "offline",
    project: str = "shiftbench",
    entity: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
  ):
    if mode not in MODES:
      raise ValueError(f"unknown logger.mode {mode!r}; allowed: {', '.join(MODES)}")
    self.mode, self.project, self.entity, self.group = mode, project, entity, group
    self.tags = list(tags or [])
    self.run = None  # the experiment's leaderboard run
    self.config: dict[str, Any] = {}
    self.output_dir: Path | None = None

  def _init(self, **kwargs: Any):
    import wandb  # imported lazily: importing wandb costs ~1 s and is not needed when disabled

    # create_new: row runs open and finish while the leaderboard run stays open
    return wandb.init(
      project=self.project,
      entity=self.entity,
      group=self.group,
      tags=self.tags,
      dir=str(self.output_dir),
      mode=self.mode,
      reinit="create_new",
      settings=wandb.Settings(console="off", init_timeout=60, x_disable_stats=True),
      **kwargs,
    )

  def start(self, config: dict[str, Any], output_dir: Path, name: str | None = None, group: str | None = None) -> None:
    """Opens the experiment's leaderboard run; `config` is the resolved config every run records, `group`
    the experiment's default group (`logger.group` wins; else the run directory)."""
    if self.mode == "disabled":
      return
    os.environ.setdefault("WANDB_SILENT", "true")
    if self.mode == "online" and not _reachable(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")):
      # wandb itself would wait 60 s and then blame the timeout; results matter more than live logging
      log.warning(
        "logger.mode=online but %s is unreachable: logging offline instead (upload later with "
        "`wandb sync %s/wandb/offline-run-*`)",
        os.environ.get("WANDB_BASE_URL", "api.wandb.ai"),
        output_dir,
      )
      self.mode = "offline"
    self.config, self.output_dir = config, Path(output_dir)
    self.group = self.group or (group or str(output_dir))[-GROUP_MAX:]
    self.run = self._init(job_type="leaderboard", config=config, name=f"leaderboard/{name}" if name else "leaderboard")

  def log_row(self, row: dict[str, Any], heatmap: Path | None) -> None:
    """One finished row as its own run: config, curve history, final summary, location map."""
    if self.mode == "disabled" or self.output_dir is None:
      return
    import wandb

    name = schema.identity(row).name()
    run = self._init(job_type=row["finetune"], name=name, config=row_config(self.config, row))
    if run is None:  # wandb.init replaced (tests) or refused
      return
    try:
      run.define_metric("finetune_step")
      run.define_metric("curve/*", step_metric="finetune_step")
      for point in row.get("curve") or []:
        values = {f"curve/{k}": point[k] for k in schema.CURVE_METRICS if point.get(k) is not None}
        run.log({"finetune_step": point["step"], **values})
      summary: dict[str, Any] = {**schema.scalar_metrics(row), "comparison_key": row.get("comparison_key")}
      if heatmap is not None and Path(heatmap).is_file():
        summary["location_map"] = wandb.Image(str(heatmap), caption=name)
      run.summary.update(summary)
    finally:
      run.finish()

  def log_table(
    self,
    columns: list[str],
    rows: list[list[Any]],
    figures: dict[str, Path] | None = None,
    key: str = "leaderboard",
    as_text: bool = True,
  ) -> None:
    """A table (the leaderboard, the claims report, the tidy rows) as a `wandb.Table` under `key` in the
    leaderboard run, plus figures (location-map grid, curves) as images. `as_text=False` keeps numbers
    as numbers (the tidy rows), so wandb can plot them."""
    if self.run is None:
      return
    import wandb

    cells = [[_cell(v, as_text) for v in r] for r in rows]
    data: dict[str, Any] = {
      key: wandb.Table(columns=[str(c) for c in columns], data=cells, allow_mixed_types=not as_text)
    }
    for name, path in (figures or {}).items():
      if Path(path).is_file():
        data[f"{key}/{name}"] = wandb.Image(str(path))
    self.run.log(data)

  def finish(self, exit_code: int = 0) -> None:
    if self.run is not None:
      self.run.finish(exit_code=exit_code)
      self.run = None


def _cell(value: Any, as_text: bool) -> Any:
  """A table cell: formatted text, or a number / string (lists and dicts as their JSON) with None kept."""
  if as_text:
    return "" if value is None else str(value)
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return json.dumps(value, default=str)
