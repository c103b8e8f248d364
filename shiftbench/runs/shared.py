"""What the rows of one plan group share while the group runs (`Shared`: the shift metrics before
fine-tuning, the plain rows' fine-tuned models, what is computed once per pretrained model), and the probe
point a row's curve starts from (`probe_point`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from shiftbench.rows.schema import RowId


class Shared(dict):
  """What the rows of one plan group share, kept while the group runs (`Protocol.open_group`, `rows_at`);
  `lock` serialises what its rows on several threads compute once."""

  def __init__(self, key: tuple):
    super().__init__()
    self.key = key
    self.lock = threading.Lock()
    self._once: dict[str, Any] = {}
    self._once_locks: dict[str, threading.Lock] = {}

  def once(self, name: str, compute: Callable[[], Any]) -> Any:
    """`compute()`'s value under `name`, computed by the first caller; a caller on another thread waits for
    it. One lock per name, so a long computation (LP-FT's probe) holds up only the rows that need it; a
    `compute` that raises leaves nothing behind (the next caller tries again)."""
    with self.lock:
      lock = self._once_locks.setdefault(name, threading.Lock())
    with lock:
      if name not in self._once:
        self._once[name] = compute()
      return self._once[name]

  @staticmethod
  def of(open_groups: dict[tuple, Shared], key: tuple, what: str, opened_by: str) -> Shared:
    """The open group `key`: a row asking for what a group that is not running shares is a bug."""
    shared = open_groups.get(key)
    if shared is None:
      now = "no group" if not open_groups else f"the groups {sorted(open_groups)}"
      raise RuntimeError(f"{what} of {key} asked for while {now} run; run its rows inside Protocol.{opened_by}")
    return shared


def probe_point(rid: RowId, done: dict[RowId, dict[str, Any]]) -> dict[str, Any] | None:
  """The final curve point of the plain `last` row of `rid`'s model, regime, rate and seed, where it ran:
  the curve's step 0 for a row that starts from the pretrained layers read by that probe (none for the
  `last` row itself)."""
  last = rid.plain_sibling("last")
  probe = done.get(last) if rid != last else None
  return probe["curve"][-1] if probe and probe.get("curve") else None
