"""How a fine-tuning method's rows are shown, as plain data: what reaches the tables and figures from
the method's class, which they cannot import (`shiftbench.methods` imports jax; they must start without it).

A run writes each of its methods' description (`Method.describe`: a `MethodInfo` as a dict) into
results.json under `methods`, by name, beside the config; reading the file (`collect.annotate`) attaches
each row's as `method_info`, as it attaches the row's model architecture: provenance of how it is
shown, never part of its identity or its numbers. A row without one (0.6.0 wrote none, or a row built by
hand) is shown by its method's name alone (`of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from shiftbench.rows import schema


class MethodInfo(NamedTuple):
  """A method as the tables show it (`shiftbench.methods.Method`'s attributes of the same names)."""

  name: str  # its rows' `finetune_method`
  title: str  # how figures and legends name it ("WiSE-FT")
  colour: str | None = None  # its colour in figures; None: one of the default cycle
  setting_name: str | None = None  # what its `method_setting` is ("alpha"); None: no grid
  setting_symbol: str | None = None  # how figures write the setting ("α")

  def label(self, setting: float | None) -> str:
    """`wise0.5`: as the row is named (`schema.method_label`)."""
    return schema.method_label(self.name, setting)


def of(row: Mapping[str, Any]) -> MethodInfo:
  """How `row`'s method is shown: its `method_info` (attached from results.json), or its name alone."""
  name = schema.dimension(row, schema.METHOD)
  found = row.get(schema.METHOD_INFO)
  if not isinstance(found, Mapping):
    return MethodInfo(name, name)
  known = {k: found[k] for k in MethodInfo._fields if found.get(k) is not None}
  return MethodInfo(**{"title": name, **known, "name": name})


def attach(rows: list[dict[str, Any]], described: Mapping[str, Any] | None) -> None:
  """Attaches to each of `rows` the description of its method among `described` (results.json's
  `methods`: name -> description), where there is one."""
  for r in rows:
    found = (described or {}).get(schema.dimension(r, schema.METHOD))
    if isinstance(found, Mapping):
      r[schema.METHOD_INFO] = dict(found)
