"""What ran, as the top of the page says it: command, date, versions, protocol, dataset, device and wall time,
read from the results files behind a board (each records its `config`, `environment` and `datasets`,
`shiftbench.runs.environment`). No jax here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def records_of(rows: Iterable[Mapping[str, Any]], out_dir: str | Path) -> list[dict[str, Any]]:
  """The results records behind a board: each rows' `source` file once, or the run directory's own
  `results.json` (a run's board: its rows carry no source). Unreadable files are skipped (the rows were
  read already; this is only what the page says about them)."""
  paths = list(dict.fromkeys(str(r.get("source") or "") for r in rows)) or [""]
  if paths == [""]:
    paths = [str(Path(out_dir) / "results.json")]
  out = []
  for p in paths:
    try:
      out.append(json.loads(Path(p).read_text()))
    except (OSError, ValueError):
      continue
  return out


def _one(values: Iterable[Any], several: str) -> str:
  found = [str(v) for v in dict.fromkeys(values) if v not in (None, "")]
  if not found:
    return "-"
  if len(found) == 1:
    return found[0]
  return f"{len(found)} {several}: {', '.join(found[:3])}{' …' if len(found) > 3 else ''}"


def _seconds(s: float) -> str:
  s = round(s)
  if s >= 3600:
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
  return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def _device(env: Mapping[str, Any]) -> str:
  """ "gpu (1 × NVIDIA H100 80GB HBM3)", "cpu (1 × cpu)": the backend and its devices by kind."""
  kinds = [str(d).split(":", 1)[-1] for d in env.get("devices") or []]
  counts = ", ".join(f"{kinds.count(k)} × {k}" for k in dict.fromkeys(kinds))
  return f"{env.get('backend', '?')}" + (f" ({counts})" if counts else "")


def protocol_version(settings: Mapping[str, Any]) -> str | None:
  """The protocol version a row's comparison settings hold (the package version where the key holds that)."""
  for name in ("protocol_version", "protocol.version", "shiftbench"):
    if settings.get(name) is not None:
      return f"{settings[name]}" if name != "shiftbench" else f"shiftbench {settings[name]}"
  return None


def what_ran(records: list[dict[str, Any]], rows: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
  """(label, text) pairs, in the page's order. With several results files, each line says how many values
  it has and names the first few."""
  rows = list(rows)
  envs = [r.get("environment") or {} for r in records]
  runs = f"{len(records)} runs" if len(records) > 1 else "1 run"
  walls = [e.get("wall_seconds") for e in envs]
  if walls and all(isinstance(w, (int, float)) for w in walls):
    wall = _seconds(sum(walls)) + (" (the runs' sum)" if len(walls) > 1 else "")
  else:
    wall = "not recorded (a results file from before 0.7.1, or a run that has not finished)"
  devices = [_device(e) for e in envs]
  pairs = [r.get("datasets") or {} for r in records]
  data = [f"{d.get('pretrain', '?')} → {d.get('finetune', '?')}" for d in pairs]
  keys = [r.get("protocol_key") for r in rows]
  versions = [protocol_version(r.get("comparison") or {}) for r in rows]
  seeds = sorted({r.get("seed") for r in rows if r.get("seed") is not None})
  return [
    ("command", _one((e.get("command") for e in envs), "commands")),
    ("date", _one((e.get("started") for e in envs), "dates")),
    ("shiftbench", _one((((e.get("versions") or {}).get("shiftbench")) for e in envs), "versions")),
    ("protocol", f"key {_one(keys, 'keys')}, version {_one(versions, 'versions')}"),
    ("dataset", _one(data, "pairs")),
    ("device", _one(devices, "devices")),
    ("wall time", wall),
    ("rows", f"{len(rows)} from {runs}, seeds {', '.join(map(str, seeds)) or '-'}"),
  ]
