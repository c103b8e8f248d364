"""Experiment tracking with Weights & Biases, offline unless the user asks for online.

Offline runs never touch the network (upload later with `wandb sync <run dir>/wandb/offline-run-*`);
`online` falls back to offline with a one-line warning when the wandb server is unreachable (probed for
3 s), instead of waiting for wandb's own 60 s timeout and failing;
`disabled` makes every call a no-op, which the tests use. A tracking failure never loses results: the
files under the run directory are written first and are the record.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MODES = ("online", "offline", "disabled")
_NOT_METRICS = ("seed", "finetune_steps", "finetune_seconds", "eval_seconds", "chance")


def scalar_metrics(row: dict[str, Any]) -> dict[str, float]:
  """Every number of a results row, under its results key; dicts (per-layer similarity) flattened with `/`."""
  out: dict[str, float] = {}
  for name, value in row.items():
    if name in _NOT_METRICS or isinstance(value, bool):
      continue
    if isinstance(value, (int, float)):
      out[name] = value
    elif isinstance(value, dict) and value and all(isinstance(v, (int, float)) for v in value.values()):
      out.update({f"{name}/{k}": v for k, v in value.items()})
  return out


def _reachable(url: str, timeout: float = 3.0) -> bool:
  """Whether a TCP connection to the URL's host opens within `timeout` seconds."""
  from shiftbench.data.tfds_source import has_network

  parts = urllib.parse.urlsplit(url if "://" in url else f"https://{url}")
  port = parts.port or (80 if parts.scheme == "http" else 443)
  return bool(parts.hostname) and has_network(parts.hostname, port, timeout)


class WandbTracker:
  """Logs config, per-row metrics, heatmaps, curves and the leaderboard table to one wandb run."""

  def __init__(self, mode: str = "offline", project: str = "shiftbench", entity: str | None = None,
               group: str | None = None, tags: list[str] | None = None):
    if mode not in MODES:
      raise ValueError(f"unknown logger.mode {mode!r}; allowed: {', '.join(MODES)}")
    self.mode, self.project, self.entity, self.group = mode, project, entity, group
    self.tags = list(tags or [])
    self.run = None

  def start(self, config: dict[str, Any], output_dir: Path, name: str | None = None) -> None:
    if self.mode == "disabled":
      return
    import wandb  # imported lazily: importing wandb costs ~1 s and is not needed when disabled

    os.environ.setdefault("WANDB_SILENT", "true")
    if self.mode == "online" and not _reachable(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")):
      # wandb itself would wait 60 s and then blame the timeout; results matter more than live logging
      log.warning("logger.mode=online but %s is unreachable: logging offline instead (upload later with "
                  "`wandb sync %s/wandb/offline-run-*`)", os.environ.get("WANDB_BASE_URL", "api.wandb.ai"),
                  output_dir)
      self.mode = "offline"
    self.run = wandb.init(project=self.project, entity=self.entity, group=self.group, tags=self.tags,
                          config=config, dir=str(output_dir), name=name, mode=self.mode,
                          reinit="finish_previous",
                          settings=wandb.Settings(console="off", init_timeout=60, x_disable_stats=True))

  def log_row(self, row: dict[str, Any], heatmap: Path | None) -> None:
    if self.run is None:
      return
    import wandb

    key = f"{row['model']}/{row['pretrain']}/{row['finetune']}/s{row['seed']}"
    data = {f"{key}/{name}": value for name, value in scalar_metrics(row).items()}
    if heatmap is not None:
      data[f"{key}/location_map"] = wandb.Image(str(heatmap))
    curve = row.get("curve") or []
    if curve:
      table = wandb.Table(columns=["step", "in_acc", "off_acc", "invariance"],
                          data=[[c["step"], c["in_acc"], c["off_acc"], c["invariance"]] for c in curve])
      data[f"{key}/curve"] = wandb.plot.line(table, "step", "invariance", title=f"{key}: invariance")
    self.run.log(data)

  def log_table(self, columns: list[str], rows: list[list[Any]], figures: dict[str, Path] | None = None,
                key: str = "leaderboard") -> None:
    """A table (the leaderboard, the claims report) as a `wandb.Table` under `key`, plus figures
    (location-map grid, curves) as images."""
    if self.run is None:
      return
    import wandb

    data: dict[str, Any] = {key: wandb.Table(columns=columns, data=[[str(v) for v in r] for r in rows])}
    for name, path in (figures or {}).items():
      if Path(path).is_file():
        data[f"{key}/{name}"] = wandb.Image(str(path))
    self.run.log(data)

  def finish(self, exit_code: int = 0) -> None:
    if self.run is not None:
      self.run.finish(exit_code=exit_code)
      self.run = None
