"""The config door: a composed config checked against the schema (`config_schema`) before anything heavy is
imported (no JAX), every mistake one `ConfigError` line naming the key, the value given and what is allowed.

`check` is what `Settings.from_config` and the CLI call first; a run that passes it may still fail on a
`_target_`'s own arguments (`targets`, once the targets are imported) or on its data.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
  ConfigKeyError,
  InterpolationToMissingValueError,
  MissingMandatoryValue,
  OmegaConfBaseException,
  ValidationError,
)

from shiftbench.infra.errors import ConfigError
from shiftbench.runs import config_schema
from shiftbench.runs.config_values import SYNONYMS, invalid, show


def check(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
  """Checks `cfg`'s keys, types and values against `config_schema.Config`; returns it resolved, as plain
  Python (the config itself, not the schema's defaults: those are what the reader assumes)."""
  if not isinstance(cfg, DictConfig):
    cfg = OmegaConf.create(dict(cfg))
  try:
    # Interpolations stay unresolved here, so an unknown key is named before anything is resolved.
    typed = OmegaConf.merge(OmegaConf.structured(config_schema.Config), cfg)
  except OmegaConfBaseException as e:
    raise _one_line(e, cfg) from None
  config = resolve(cfg)
  try:
    OmegaConf.to_object(typed)  # builds each group's dataclass: its `__post_init__` checks the values
  except OmegaConfBaseException as e:
    raise _one_line(e, cfg) from None
  return config


def resolve(cfg: DictConfig) -> dict[str, Any]:
  """The config as plain Python with every interpolation resolved; a `ConfigError` naming the key that
  cannot be resolved (e.g. `data.path` left at `???`)."""
  try:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
  except (MissingMandatoryValue, InterpolationToMissingValueError) as e:
    # The key left at ???, not the one that interpolates it (`data.pretrain.path: ${data.path}`).
    found = re.search(r"Missing mandatory value: (\S+)", str(e))
    key = found.group(1) if found and "." in found.group(1) else getattr(e, "full_key", None) or "?"
    raise ConfigError(f"config key {key} is ??? (not set); set it on the command line, e.g. {key}=...") from e
  except OmegaConfBaseException as e:
    key = getattr(e, "full_key", None) or "?"
    raise ConfigError(
      f"config key {key} cannot be resolved ({type(e).__name__}: "
      f"{str(e).splitlines()[0]}); set it on the command line, e.g. {key}=..."
    ) from e


def unknown_key(path: str, value: Any, cfg: DictConfig | None = None) -> ConfigError:
  """A key the schema does not define where it defines the keys (not inside a `_target_` entry), with the
  nearest keys it does define (an entry's own keys included: `pretrain.lr` finds pretrain.optimizer.learning_rate)."""
  if path in config_schema.RENAMED:
    return ConfigError(config_schema.RENAMED[path])
  parent, _, name = path.rpartition(".")
  allowed = config_schema.keys_of(config_schema.group_at(parent) or config_schema.Config)
  if not parent:  # the words the top-level check has always used (tests and users match them)
    close = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(allowed))}"
    return ConfigError(
      f"unknown config key {name!r} (the config defines no such top-level key, so it would be ignored); {hint}"
    )
  candidates = list(allowed)
  for key in allowed:  # an entry's own keys, as they are in this config
    entry = OmegaConf.select(cfg, f"{parent}.{key}", default=None) if cfg is not None else None
    if isinstance(entry, DictConfig) and "_target_" in entry:
      candidates += [f"{key}.{k}" for k in entry if not str(k).startswith("_")]
  close = difflib.get_close_matches(SYNONYMS.get(name, name), candidates, n=2, cutoff=0.5)
  if close:
    hint = "did you mean " + " or ".join(repr(f"{parent}.{c}") for c in close) + "?"
  else:
    hint = f"{parent} defines: {', '.join(allowed)}"
  return ConfigError(
    f"unknown config key {path!r} ({parent} defines no such key, so {path}={show(value)} would be ignored); {hint}"
  )


def _one_line(e: OmegaConfBaseException, cfg: DictConfig) -> ConfigError:
  """OmegaConf's multi-line report of a schema mismatch, as the `ConfigError` that says it in the config's terms."""
  path = str(getattr(e, "full_key", "") or "")
  key = re.sub(r"\[\d+\]", "", path)  # a list element's error names the whole list
  value = _value(cfg, key)
  if isinstance(e, ConfigKeyError):
    return unknown_key(key, value, cfg)
  if isinstance(e, MissingMandatoryValue):
    return ConfigError(f"config key {key} is not set; the protocol needs it: set it, e.g. +{key}=...")
  if isinstance(e, ValidationError) and config_schema.allowed(key):
    return invalid(key, value, config_schema.allowed(key))
  return ConfigError(f"config key {key}: {str(e).splitlines()[0]}")


def _value(cfg: DictConfig, key: str) -> Any:
  """The value the config gives `key`, as plain Python, for the message (None if even that fails)."""
  try:
    value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
  except OmegaConfBaseException:
    return None
