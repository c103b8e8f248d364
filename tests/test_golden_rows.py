"""Golden rows: the numbers of one tiny fixed run (scripts/golden_rows.py), pinned exactly on this CPU.

A number that moves while `PROTOCOL_VERSION` stays would put rows that differ under one protocol key: on one
board, in one claim, restored from one cached checkpoint. So a change that moves a number must raise the
protocol version, regenerate tests/golden/rows_protocol_<V>.json and say what changed in the changelog of
docs/protocol.md. The fixture was made under the suite's XLA flags (tests/conftest.py); glyphs rendered
with other fonts give other data, which the test names before it compares any number.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

from shiftbench.rows import comparison

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import golden_rows  # noqa: E402

FIX = (
  "if the change is meant, raise PROTOCOL_VERSION (shiftbench/rows/comparison.py), regenerate the fixture "
  "with `PYTHONPATH=. python scripts/golden_rows.py` and add a line for the new version to the protocol "
  "changelog in docs/protocol.md"
)


def moved(expected, got, path: str = "") -> list[str]:
  """Where `got` differs from `expected` (dotted paths with both values); floats compared exactly."""
  if isinstance(expected, dict) and isinstance(got, dict):
    out = [f"{path}{k}: missing" for k in expected if k not in got]
    out += [f"{path}{k}: new" for k in got if k not in expected]
    return out + [m for k in expected if k in got for m in moved(expected[k], got[k], f"{path}{k}.")]
  if isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
    return [m for i, (e, g) in enumerate(zip(expected, got)) for m in moved(e, g, f"{path}{i}.")]
  same = expected == got or (
    isinstance(expected, float) and isinstance(got, float) and math.isnan(expected) and math.isnan(got)
  )
  return [] if same else [f"{path.rstrip('.')}: {expected!r} -> {got!r}"]


def test_moved_reports_each_changed_number_and_nothing_else():
  rows = {"rows": [{"in_acc": 0.5, "curve": [{"invariance": float("nan")}]}]}
  assert moved(rows, json.loads(json.dumps(rows))) == []
  other = {"rows": [{"in_acc": 0.5000001, "curve": [{"invariance": float("nan")}]}]}
  assert moved(rows, other) == ["rows.0.in_acc: 0.5 -> 0.5000001"]


def test_the_tiny_run_gives_the_golden_rows_of_this_protocol_version(tiny_data_dir, tmp_path):
  path = golden_rows.path_for(comparison.PROTOCOL_VERSION)
  assert path.is_file(), (
    f"no golden rows for protocol version {comparison.PROTOCOL_VERSION} ({path.name}): run "
    "`PYTHONPATH=. python scripts/golden_rows.py`"
  )
  golden = json.loads(path.read_text())
  got = golden_rows.run(tiny_data_dir, tmp_path)
  assert got["datasets"] == golden["datasets"], (
    "the tiny glyph datasets differ from the fixture's (other fonts, Pillow or FreeType here?): the golden "
    f"rows hold for the data they were made on ({golden['datasets']}, here {got['datasets']})"
  )
  changes = moved(golden["rows"], got["rows"], "rows.")
  shown = "; ".join(changes[:6]) + (f" and {len(changes) - 6} more" if len(changes) > 6 else "")
  assert not changes, f"numbers moved while PROTOCOL_VERSION is {comparison.PROTOCOL_VERSION!r}: {shown}; {FIX}"


def test_the_protocol_changelog_has_a_line_for_the_current_protocol_version():
  text = (ROOT / "docs" / "protocol.md").read_text()
  section = text[text.index("## Protocol changelog") :].split("\n## ")[0]
  versions = re.findall(r"^- \*\*([^*]+)\*\*", section, flags=re.M)
  assert comparison.PROTOCOL_VERSION in versions, (
    f"docs/protocol.md's protocol changelog has no line for protocol version {comparison.PROTOCOL_VERSION} "
    f"(lines for {versions}): say what changed in its numbers"
  )


def test_the_protocol_version_not_the_package_version_enters_the_keys(monkeypatch):
  """0.6.0 hashed the package version: every release moved every key, so no two releases shared a board."""
  import shiftbench
  from shiftbench.training import checkpoints

  config, hashes, description = {"canvas": {"size": 32}}, {"pretrain": "a"}, {"model": {"head": "fc"}}
  protocol = comparison.key_of(comparison.protocol_settings(config, hashes))
  checkpoint = checkpoints.checkpoint_key(description)
  monkeypatch.setattr(shiftbench, "__version__", "9.9.9")  # another release of the same protocol
  assert comparison.key_of(comparison.protocol_settings(config, hashes)) == protocol
  assert checkpoints.checkpoint_key(description) == checkpoint
  monkeypatch.setattr(comparison, "PROTOCOL_VERSION", "999")  # another protocol
  assert comparison.key_of(comparison.protocol_settings(config, hashes)) != protocol
  assert checkpoints.checkpoint_key(description) != checkpoint


@pytest.fixture
def two_protocols(tiny_results):
  """The tiny run's rows, and the same rows as a run of another protocol version would key them."""
  from shiftbench.rows import collect

  rows = collect.collect([tiny_results / "seed0"])
  other = []
  for r in rows:
    settings = {**r["comparison"], "protocol_version": "999"}
    other.append(
      {
        **r,
        "comparison": settings,
        "comparison_key": comparison.key_of(settings),
        "protocol_key": comparison.key_of(comparison.protocol_part(settings)),
        "seed": 1,
      }
    )
  return rows, other


def test_rows_of_two_protocol_versions_never_share_a_board_line(two_protocols):
  from shiftbench.reporting import leaderboard

  rows, other = two_protocols
  board = leaderboard.build(rows + other)
  assert len(board.entries) == 2 * len(rows)  # seeds 0 and 1 never average across protocol versions
  assert all(e["seeds"] in ([0], [1]) for e in board.entries)
  assert len({e["protocol_key"] for e in board.entries}) == 2
  assert "protocol_version" in board.columns  # the setting they differ in is shown
