"""Reference rows: the rows of the published presets (`quick`, `reproduce`, `methods`, `reproduce_stop` on the
glyphs), shipped inside the package, so a run's board ranks its own rows beside them without rerunning a
baseline.

A reference file (`shiftbench/reference/<preset>.json.gz`, made by `scripts/make_reference.py`) is one
finished run's `results.json` record with the large per-row arrays dropped (`DROPPED`: the location map and
its heatmap's path; curves are kept), plus what says where it came from: the preset, the command, the
shiftbench version and protocol version that made it, the date, the run's protocol key, and the sha256 of
all of it (`verify`). Every row of a file has the file's protocol key: a file never mixes protocols.

`merge` adds to a user's rows the reference rows of every protocol key the user's rows have, except the
rows the user ran themselves (same protocol key and `schema.RowId`: the user's row wins) and the rows at
fine-tune rates the user did not run. Each added row carries `reference` (`LABEL`, e.g. `reference 0.7.0
2026-12-07`): the board's `source` column and the claims' notes read it. Nothing is rerun.

No jax here: the table tools import this module and must start without it.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import gzip
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from shiftbench.infra import hashing
from shiftbench.infra.errors import DataError
from shiftbench.rows import collect, comparison, schema

FORMAT = 1
FOLDER = "reference"  # where the shipped files live: package data of `shiftbench`, not a package of its own
# The presets shipped, in the order their rows are taken when two files hold the same row.
PRESETS: tuple[str, ...] = ("quick", "reproduce", "methods", "reproduce_stop")
SUFFIX = ".json.gz"
DROPPED: tuple[str, ...] = ("location_map", "heatmap")  # per-row arrays, and a path to a PNG not shipped
LABEL = "reference"  # the annotation a reference row carries (`fields.RESULTS`)
THIS_RUN = "this run"  # the source of a user's own row, as the board shows it


@dataclasses.dataclass(frozen=True)
class ReferenceSet:
  """One reference file, verified: its provenance and its rows (a results.json record)."""

  preset: str
  path: str
  shiftbench: str  # the package version that made it
  protocol_version: str | None
  made: str  # ISO 8601 date and time (UTC)
  command: str
  protocol_key: str
  record: dict[str, Any]

  @property
  def label(self) -> str:
    """`reference 0.7.0 2026-12-07`: what the board's `source` column says of its rows."""
    return f"{LABEL} {self.shiftbench} {self.made[:10]}"

  def rows(self) -> list[dict[str, Any]]:
    """Its rows annotated as a results file's are (`collect.annotate`), each marked with `label`."""
    rows = collect.annotate(self.record, source=self.path)
    for r in rows:
      r[LABEL] = self.label
    return rows


def check_row(row: Mapping[str, Any], protocol_key: str | None = None) -> str:
  """A row's protocol key, after checking that its identity is complete and that its keys are those of its
  recorded settings (`comparison`); a `DataError` naming the row otherwise. With `protocol_key`, the row
  must have that one."""
  missing = schema.missing_identity(row)
  if missing:
    raise DataError(f"a reference row lacks its {', '.join(missing)}: only rows of a finished run can be shipped")
  name = schema.identity(row).name()
  settings = row.get("comparison")
  if not isinstance(settings, Mapping):
    raise DataError(f"reference row {name} has no comparison settings: rows from before 0.5.0 cannot be shipped")
  if row.get("comparison_key") != comparison.key_of(settings):
    raise DataError(f"reference row {name}: comparison_key {row.get('comparison_key')} is not its settings' key")
  own = comparison.key_of(comparison.protocol_part(settings))
  if row.get("protocol_key") != own:
    raise DataError(f"reference row {name}: protocol_key {row.get('protocol_key')} is not its settings' key {own}")
  if protocol_key is not None and own != protocol_key:
    raise DataError(
      f"reference row {name} has protocol key {own}, not {protocol_key}: one reference file holds one protocol; "
      "make one file per preset run"
    )
  return own


def pack(preset: str, records: Iterable[Mapping[str, Any]], command: str, made: str | None = None) -> dict[str, Any]:
  """The content of a reference file from the `results.json` records of finished runs of `preset`: every
  row checked (`check_row`) and of one protocol key (a `DataError` names the first that is not), the
  large arrays dropped, the paths left out of the config, and its sha256 recorded."""
  records = list(records)
  if not records or not any(r.get("rows") for r in records):
    raise DataError(f"no rows to make the {preset!r} reference from: give finished run directories")
  first = records[0]
  config = {k: v for k, v in (first.get("config") or {}).items() if k != "paths"}
  rows, key, seen = [], None, set()
  for record in records:
    for row in record.get("rows", []):
      key = check_row(row, key)
      ident = schema.identity(row)
      if ident in seen:
        continue
      seen.add(ident)
      rows.append({k: v for k, v in row.items() if k not in DROPPED})
  versions = (first.get("environment") or {}).get("versions") or {}
  doc = {
    "format": FORMAT,
    "preset": preset,
    "shiftbench": versions.get("shiftbench") or "?",
    "protocol_version": comparison.PROTOCOL_VERSION,  # the one its rows' keys hold
    "made": made or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "command": command,
    "protocol_key": key,
    "config": config,
    "datasets": first.get("datasets") or {},
    "methods": {k: v for r in records for k, v in (r.get("methods") or {}).items()},
    "environment": first.get("environment") or {},
    "rows": rows,
  }
  doc["sha256"] = hashing.json_hash(doc)
  return doc


def dumps(doc: Mapping[str, Any]) -> bytes:
  """A reference file's bytes: its JSON, gzipped with no timestamp (the same content, the same bytes)."""
  return gzip.compress(json.dumps(doc, sort_keys=True, allow_nan=False).encode(), mtime=0)


def load(path: str | Path, name: str | None = None) -> ReferenceSet:
  """A reference file, verified: it reads, its sha256 is the one recorded inside, and every row has the
  file's protocol key and keys that match its settings. A `DataError` (one line) otherwise."""
  where = name or str(path)
  try:
    doc = json.loads(gzip.decompress(Path(path).read_bytes()))
    recorded = doc.pop("sha256")
  except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise DataError(f"reference file {where} is not readable ({type(e).__name__}: {e}); reinstall shiftbench") from e
  digest = hashing.json_hash(doc)
  if digest != recorded:
    raise DataError(
      f"reference file {where} does not verify: its content hashes to {digest[:12]}, not the recorded "
      f"{str(recorded)[:12]}; reinstall shiftbench, or remake it with scripts/make_reference.py"
    )
  if doc.get("format") != FORMAT:
    raise DataError(f"reference file {where} has format {doc.get('format')!r}; this shiftbench reads format {FORMAT}")
  for row in doc["rows"]:
    check_row(row, doc["protocol_key"])
  keep = ("preset", "shiftbench", "protocol_version", "made", "command", "protocol_key")
  return ReferenceSet(path=where, record=doc, **{k: doc[k] for k in keep})


def shipped_names() -> list[str]:
  """The reference files inside the package, by file name, in `PRESETS` order (others after, by name)."""
  folder = resources.files("shiftbench") / FOLDER
  names = [f.name for f in folder.iterdir() if f.name.endswith(SUFFIX)] if folder.is_dir() else []
  order = {p + SUFFIX: i for i, p in enumerate(PRESETS)}
  return sorted(names, key=lambda n: (order.get(n, len(order)), n))


def shipped() -> list[ReferenceSet]:
  """Every reference file shipped inside the package, verified (`load`) once per process and file version:
  every run's board asks, and reading and hashing them all takes a few tenths of a second."""
  out = []
  for name in shipped_names():
    with resources.as_file(resources.files("shiftbench") / FOLDER / name) as path:
      stat = path.stat()
      out.append(_load_once(str(path), f"shiftbench/{FOLDER}/{name}", stat.st_mtime_ns, stat.st_size))
  return out


@functools.lru_cache(maxsize=16)
def _load_once(path: str, name: str, mtime_ns: int, size: int) -> ReferenceSet:
  """`load`, cached by the file's path, modification time and size (a rewritten file is read again)."""
  return load(path, name)


# What a board is given: no reference rows (False, None), the shipped sets (True), or these sets or files.
Choice = bool | Iterable[ReferenceSet | str | Path] | None


def sets(reference: Choice) -> list[ReferenceSet]:
  """The reference sets a board merges: none (False, None), the shipped ones (True), or the given sets
  and files."""
  if not reference:
    return []
  if reference is True:
    return shipped()
  return [s if isinstance(s, ReferenceSet) else load(s) for s in reference]


def merge(rows: list[dict[str, Any]], references: Iterable[ReferenceSet]) -> list[dict[str, Any]]:
  """`rows` and, for each protocol key among them, the reference rows of that key that the user did not
  run: a user's row with the same (protocol key, `schema.RowId`) wins, rows at fine-tune rates none of the
  user's rows of that key ran at are left out, and a row two sets hold is taken from the first."""
  rates: dict[str, set[Any]] = {}
  taken = set()
  for r in rows:
    rates.setdefault(r.get("protocol_key"), set()).add(r.get(schema.LR))
    taken.add((r.get("protocol_key"), schema.identity(r)))
  out = list(rows)
  for ref in references:
    if ref.protocol_key not in rates:
      continue
    for r in ref.rows():
      key = (ref.protocol_key, schema.identity(r))
      if r.get(schema.LR) in rates[ref.protocol_key] and key not in taken:
        taken.add(key)
        out.append(r)
  return out


def is_reference(row: Mapping[str, Any]) -> bool:
  return bool(row.get(LABEL))


def source(row: Mapping[str, Any]) -> str:
  """`this run`, or the reference set the row came from (`reference 0.7.0 2026-12-07`)."""
  return row.get(LABEL) or THIS_RUN
