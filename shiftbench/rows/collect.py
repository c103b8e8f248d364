"""Reading results files into rows: every `results.json` under some paths, each row annotated with its
dataset pair, architecture, method's description and source file, and each row (`schema.UNIQUE`) once."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shiftbench.infra.errors import DataError
from shiftbench.rows import comparison, method_info, schema


def annotate(record: dict[str, Any], source: str | Path | None = None) -> list[dict[str, Any]]:
  """A results.json record's rows, each with its dataset pair, architecture config, method's description
  (`method_info`; none in a file 0.6.0 wrote) and source attached.

    Rows written before comparison keys existed get one computed from the record's
    config, with unknown data hashes: they never merge with a newer row.
  """
  datasets = record.get("datasets") or {}
  pair = f"{datasets.get('pretrain', '?')} -> {datasets.get('finetune', '?')}" if datasets else ""
  config = record.get("config") or {}
  models = config.get("model") or {}
  version = ((record.get("environment") or {}).get("versions") or {}).get("shiftbench") or "?"
  protocol = None
  out = []
  for r in record.get("rows", []):
    r = {**r, "datasets": pair, "architecture": models.get(r["model"]), "source": str(source or "")}
    if "comparison_key" not in r:
      protocol = protocol or comparison.protocol_settings(
        config, {"pretrain": datasets.get("pretrain_sha256"), "finetune": datasets.get("finetune_sha256")}, version
      )
      r["comparison"] = comparison.row_settings(protocol, r["architecture"])
      r["comparison_key"] = comparison.key_of(r["comparison"])
      r["protocol_key"] = comparison.key_of(protocol)
    out.append(r)
  method_info.attach(out, record.get("methods"))
  return out


def _numbers(row: dict[str, Any]) -> str:
  """Everything of a row but its provenance and its identity (which `merge_duplicates` matched already,
  however the file spelled it: 0.6.0's setting fields, or `method_setting`)."""
  skip = (*schema.PROVENANCE, *schema.IDENTITY, *schema.LEGACY_SETTINGS)
  return json.dumps({k: v for k, v in row.items() if k not in skip}, sort_keys=True, default=str)


def merge_duplicates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Each row (`schema.UNIQUE`: comparison key and identity) once: a copy with identical numbers (a run
  directory collected twice, or copied) is dropped; different numbers for one identity are a `DataError`
  naming both files."""
  seen: dict[tuple, dict[str, Any]] = {}
  out = []
  for r in rows:
    ident = schema.unique(r)
    first = seen.get(ident)
    if first is None:
      seen[ident] = r
      out.append(r)
    elif _numbers(first) != _numbers(r):
      raise DataError(
        f"{first['source'] or 'a results file'} and {r['source'] or 'another'} both hold "
        f"{schema.identity(r).name()} of experiment "
        f"{r['comparison_key']} with different numbers; the same settings and seed must give the "
        "same row: leave one of the files out"
      )
  return out


def collect(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
  """Every row of every `results.json` found under `paths` (files or directories, searched recursively),
  each (experiment, seed) once (`merge_duplicates`)."""
  rows = []
  for p in paths:
    p = Path(p)
    if not p.exists():
      raise FileNotFoundError(f"no such results file or directory: {p}")
    files = [p] if p.is_file() else sorted(p.rglob("results.json"))
    for f in files:
      rows.extend(_read_rows(f))
  return merge_duplicates(rows)


def _read_rows(path: Path) -> list[dict[str, Any]]:
  """The annotated rows of one results file; a `DataError` naming it if it is not one."""
  try:
    rows = annotate(json.loads(path.read_text()), source=path)
    for r in rows:
      missing = schema.missing_identity(r)
      if missing:
        raise KeyError(", ".join(missing))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
    raise DataError(
      f"{path} is not a readable shiftbench results.json ({type(e).__name__}: {e}); it may be "
      "truncated or corrupted: run that experiment again (it resumes) or leave the file out"
    ) from e
  return rows
