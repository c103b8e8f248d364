"""Which rows are the same experiment: comparison keys over every setting that can change a number.

Two numbers are comparable only when they come from the same protocol. A row's settings are the resolved
config flattened to dotted names, minus what cannot change its numbers (`IGNORED`: seeds, paths,
logging, eval batch size, workers, which other rows were run), plus what the config cannot show: the
content hash of each dataset's arrays and the protocol version (`PROTOCOL_VERSION`). A data path is
replaced by that hash, so a file rewritten in place is another experiment and a copy elsewhere is the same
one.

- `protocol_key`: the settings every row of a run shares (data, canvas, budgets, optimisers, evaluation
  grid and subsets, protocol version). Rows with one protocol key can be compared with each other (the claims
  report pairs models, regimes and modes within one).
- `comparison_key`: the protocol plus the row's own model architecture and fine-tune method's settings
  (`method.*`: those beyond the row's identity, e.g. L2-SP's classifier ratio; none for plain rows).
  Leaderboard rows are (row dimensions, comparison_key); seeds average only within one.
Anything new in the config counts by default: only the names in `IGNORED` are left out.
"""

from __future__ import annotations

import fnmatch
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from shiftbench.infra import hashing

# The version of the protocol: raised whenever a change moves a number of some row (another default,
# stream, optimiser program or evaluation), with a line in the changelog of docs/protocol.md. It, not the
# package version, is hashed into every protocol key and pretrained-checkpoint key and checked when a run
# directory is resumed: a release that moves no number keeps earlier rows comparable and cached
# checkpoints valid, and rows of two protocol versions never share a key, a run or a board. The package
# version stays recorded in every results file (`environment.versions.shiftbench`). Golden rows
# (tests/test_golden_rows.py) fail when a number moves while this stays.
PROTOCOL_VERSION = "2"

# Settings that cannot change a row's numbers. `model.*` is left out of the protocol because each row
# carries its own model's architecture under `architecture.*`.
IGNORED = (
  "seeds",
  "paths.*",
  "logger.*",
  "overwrite",
  "reference",  # whether the board shows the shipped reference rows beside the run's
  "compile_cache",
  "row_threads",  # how many plan groups run at once: the same numbers (runs.row_pool)
  "eval.batch_size",
  "widths",
  "model.*",
  "pretrain.regimes",
  "finetune.modes",
  "finetune.scratch_modes",
  "finetune.learning_rates",  # a row dimension: each row carries its own `finetune_lr`
  "finetune.methods",  # a row dimension: each row carries its method, setting and `method.*` settings
  "finetune.optimizer.learning_rate",
  "arms",
  "arms.*",
  "pretrain.checkpoint_every",
  "pretrain.wait_timeout_s",
  "pretrain.weights",  # a path: the row's key holds the weights' sha256 instead (protocol.Protocol.row)
  "data.data_dir",
  "data.path",
  "data.*.data_dir",
  "data.*.path",
  "data.*.workers",
  "data.*.download",
)
KEY_LENGTH = 12


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """A nested config as {dotted name: leaf}; lists are leaves (their order matters)."""
  if isinstance(tree, Mapping):
    out: dict[str, Any] = {}
    for k, v in tree.items():
      out.update(flatten(v, f"{prefix}{k}."))
    return out
  return {prefix.rstrip("."): tree}


def ignored(name: str) -> bool:
  return any(fnmatch.fnmatchcase(name, pattern) for pattern in IGNORED)


def protocol_settings(
  config: Mapping[str, Any], data_hashes: Mapping[str, str | None], protocol_version: str | None = None
) -> dict[str, Any]:
  """The shared settings of a run: its resolved `config` less `IGNORED`, plus `data.<side>.sha256` and
  `protocol_version` (this one's unless given)."""
  settings = {k: v for k, v in flatten(config).items() if not ignored(k)}
  for side, digest in data_hashes.items():
    settings[f"data.{side}.sha256"] = digest
  settings["protocol_version"] = protocol_version or PROTOCOL_VERSION
  return dict(sorted(settings.items()))


ARCHITECTURE, METHOD = "architecture.", "method."  # a row's own settings, beyond its run's protocol
ROW_PARTS = (ARCHITECTURE, METHOD)


def row_settings(
  protocol: Mapping[str, Any], architecture: Mapping[str, Any] | None, method: Mapping[str, Any] | None = None
) -> dict[str, Any]:
  """The protocol plus one model's resolved architecture config (as `architecture.*`) and the settings of
  the row's fine-tune method beyond its identity (as `method.*`)."""
  arch = {f"{ARCHITECTURE}{k}": v for k, v in flatten(architecture or {}).items()}
  own = {f"{METHOD}{k}": v for k, v in flatten(method or {}).items()}
  return dict(sorted({**protocol, **arch, **own}.items()))


def key_of(settings: Mapping[str, Any]) -> str:
  """A short stable hash of the settings (`hashing.json_hash`: canonical JSON)."""
  return hashing.json_hash(settings, KEY_LENGTH)


def protocol_part(settings: Mapping[str, Any]) -> dict[str, Any]:
  """A row's settings without its architecture and method settings: what its protocol key is computed from."""
  return {k: v for k, v in settings.items() if not k.startswith(ROW_PARTS)}


def without_method(settings: Mapping[str, Any]) -> dict[str, Any]:
  """A row's settings without its method's own (`method.*`): a plain row's of the same experiment."""
  return {k: v for k, v in settings.items() if not k.startswith(METHOD)}


def differing(settings: Iterable[Mapping[str, Any]]) -> list[str]:
  """The dotted names whose values are not the same in every one of `settings` (absent counts)."""
  settings = list(settings)
  names = sorted({k for s in settings for k in s})
  missing = object()
  return [n for n in names if len({json.dumps(s.get(n, missing), sort_keys=True, default=repr) for s in settings}) > 1]


def differing_settings(entries: list[dict[str, Any]]) -> list[str]:
  """The settings in which the leaderboard's groups differ: protocol settings between protocol groups,
  and architecture settings between groups of one model name (model names already tell models apart)."""
  protocols = {e["protocol_key"]: protocol_part(e["settings"]) for e in entries}
  names = differing(protocols.values()) if len(protocols) > 1 else []
  by_model: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
  for e in entries:
    arch = {k: v for k, v in e["settings"].items() if k.startswith(ARCHITECTURE)}
    by_model[e["model"]][key_of(arch)] = arch
  for archs in by_model.values():
    if len(archs) > 1:
      names += [n for n in differing(archs.values()) if n not in names]
  by_method: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # the same for one method's settings
  for e in entries:
    own = {k: v for k, v in e["settings"].items() if k.startswith(METHOD)}
    by_method[e.get("finetune_method", "plain")][key_of(own)] = own
  for owns in by_method.values():
    if len(owns) > 1:
      names += [n for n in differing(owns.values()) if n not in names]
  return names
