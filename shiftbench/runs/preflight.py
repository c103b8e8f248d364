"""Checks that run before any data is loaded or any step trained, so a bad run fails in seconds.

Each raises a `ConfigError` whose one-line message names the key or path at fault and what to do.
"""

from __future__ import annotations

import difflib
import functools
import math
import numbers
import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from shiftbench.infra.errors import ConfigError

CONFIG_MODULE = "shiftbench.conf"  # the shipped configs (conf/ in a checkout, inside the wheel when installed)
# Top-level keys that are not in the shipped config but that the code reads.
EXTRA_KEYS = frozenset({"overwrite"})
# Optimiser hyperparameters with an obvious domain: name -> (check, what it must be).
_OPTIMIZER_DOMAINS = {
  "learning_rate": (lambda v: v > 0, "> 0"),
  "b1": (lambda v: 0 <= v < 1, "in [0, 1)"),
  "b2": (lambda v: 0 <= v < 1, "in [0, 1)"),
  "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
  "decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
  "eps": (lambda v: v >= 0, ">= 0"),
  "weight_decay": (lambda v: v >= 0, ">= 0"),
}


@functools.cache  # the shipped conf/ does not change while a process runs; composing it all takes ~1 s
def shipped_top_level_keys() -> frozenset[str]:
  """The top-level keys the shipped config defines: the default composition and every experiment preset.

  Derived by composing `conf/` (inside a running Hydra app, through its own search path), so a key added
  to a yaml file is allowed without touching this list.
  """
  from hydra import compose, initialize_config_module
  from hydra.core.global_hydra import GlobalHydra

  def keys() -> set[str]:
    found = set(compose("config"))
    for option in GlobalHydra.instance().config_loader().get_group_options("experiment"):
      found |= set(compose("config", overrides=[f"experiment={option}"]))
    return found

  if GlobalHydra.instance().is_initialized():
    return frozenset(keys())
  with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
    return frozenset(keys())


def check_top_level_keys(cfg: DictConfig, allowed: set[str] | None = None) -> None:
  """Unknown top-level keys (a typo added with `+`) are an error that suggests the nearest valid key."""
  allowed = (shipped_top_level_keys() if allowed is None else set(allowed)) | EXTRA_KEYS
  for key in cfg:
    if key in allowed:
      continue
    close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(allowed))}"
    raise ConfigError(
      f"unknown config key {key!r} (the config defines no such top-level key, so it would be ignored); {hint}"
    )


def check_optimizers(cfg: DictConfig, phases: tuple[str, ...] = ("pretrain", "finetune")) -> None:
  """Optimiser hyperparameters with an obvious domain (learning rate > 0, betas in [0, 1), ...)."""
  for phase in phases:
    opt = OmegaConf.select(cfg, f"{phase}.optimizer")
    if not isinstance(opt, DictConfig):
      continue
    for name, (ok, domain) in _OPTIMIZER_DOMAINS.items():
      value = opt.get(name)
      if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
        continue  # absent, or a schedule (`_target_`): optax checks those itself
      if not (math.isfinite(value) and ok(value)):
        raise ConfigError(
          f"{phase}.optimizer.{name} must be {domain}, got {value} ({opt.get('_target_', 'optimizer')})"
        )


def int_list(value: Any, key: str, minimum: int | None = None, example: str = "[0, 1, 2]") -> list[int]:
  """A non-empty list of integers (or one integer), else a `ConfigError` naming `key`."""
  values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
  if not values:
    raise ConfigError(f"{key} is empty; give at least one integer, e.g. {key}={example}")
  for v in values:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
      raise ConfigError(f"{key} must be a list of integers, got {v!r} in {key}={values}; e.g. {key}={example}")
    if minimum is not None and v < minimum:
      raise ConfigError(f"{key} values must be >= {minimum}, got {v} in {key}={values}")
  return [int(v) for v in values]


def check_lists(cfg: DictConfig) -> None:
  """`seeds` and every `widths` (top level and per model) are non-empty lists of integers."""
  int_list(cfg.seeds, "seeds")
  if "widths" in cfg:
    int_list(cfg.widths, "widths", minimum=1, example="[8, 16, 32]")
  for name, model in (cfg.get("model") or {}).items():
    if isinstance(model, DictConfig) and "widths" in model:
      int_list(model.widths, f"model.{name}.widths", minimum=1, example="[8, 16, 32]")


def check_writable(path: str | os.PathLike, what: str, hint: str) -> Path:
  """Creates `path` if needed and writes a probe file in it; a `ConfigError` naming it if that fails."""
  path = Path(path).expanduser().absolute()
  try:
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
      pass
  except OSError as e:
    raise ConfigError(f"{what} {path} is not writable ({e.strerror or e}); {hint}") from e
  return path


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
  """Dotted keys whose values differ between two plain config trees (added and removed keys too)."""
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in sorted(set(old) | set(new), key=str):
      out += config_diff(old.get(key, "<absent>"), new.get(key, "<absent>"), f"{prefix}{key}.")
    return out
  return [] if old == new else [prefix.rstrip(".")]


def check_config(cfg: DictConfig) -> None:
  """Every config check that needs nothing but the config."""
  check_top_level_keys(cfg)
  check_lists(cfg)
  check_optimizers(cfg)
