"""Hydra's own errors about the command line (an override it cannot parse, a config group option that does
not exist, a key it cannot set) as one `ConfigError` line in the schema's terms; `cli.main` prints them."""

from __future__ import annotations

import difflib
import re

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException, SearchPathException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from shiftbench.infra.errors import ConfigError, UserError
from shiftbench.runs import config_schema, door

GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"
KEY_ERRORS = (ConfigKeyError, ConfigAttributeError)  # what OmegaConf raises for a key a config lacks


def as_user_error(e: BaseException) -> UserError | None:
  """`e` as the one-line error a user can act on, or None when it is not about their input (a bug)."""
  if isinstance(e, UserError):
    return e
  if isinstance(e, OverrideParseException):
    reason = e.message.splitlines()[0] if e.message else "not an override"
    return ConfigError(
      f"cannot parse the override {e.override!r}: {reason}; write key=value, and quote a value with brackets, "
      f"braces or spaces, e.g. 'finetune.learning_rates=[1e-3,1e-2]' (grammar: {GRAMMAR})"
    )
  if isinstance(e, MissingConfigException):
    return _missing_option(e)
  overriding = re.match(r"Could not override '([^']+)'", str(e))
  if isinstance(e, ConfigCompositionException) and overriding and isinstance(e.__cause__, KEY_ERRORS):
    return _not_in_config(overriding.group(1), str(e))
  if isinstance(e, (ConfigCompositionException, SearchPathException)):  # Hydra's words, on one line
    return ConfigError(str(e))
  return None


def _missing_option(e: MissingConfigException) -> ConfigError:
  """`model=nosuch`: the group's options, the nearest first."""
  missing = e.missing_cfg_file or ""
  group, _, option = missing.rpartition("/")
  options = sorted(e.options or [])
  if not group or not options:  # the primary config, or a --config-dir without it
    return ConfigError(" ".join(str(e).split("Config search path:")[0].split()))
  close = difflib.get_close_matches(option, options, n=1, cutoff=0.5)
  hint = f"did you mean {group}={close[0]}? " if close else ""
  return ConfigError(
    f"{group}={option}: there is no {missing}.yaml; {hint}options: {', '.join(options)} "
    "(your own: a folder with <group>/<name>.yaml, given as --config-dir DIR before the overrides)"
  )


def _not_in_config(path: str, message: str) -> ConfigError:
  """`finetune.lr=1e-3`: a key the composed config lacks. Where the schema defines the keys, it is unknown
  (adding it with `+` would only move the error); inside a `_target_` entry, `+` adds an argument."""
  given = re.search(r"use \+(\S+)", message)
  override = given.group(1) if given else f"{path}=..."
  try:  # the value as Hydra reads it (1e-3 is a number), as the same mistake made with `+` shows it
    value = OverridesParser.create().parse_overrides([override])[0].value()
  except Exception:
    value = override.partition("=")[2]
  unknown = config_schema.first_unknown(path)
  if unknown is not None:  # the value under the unknown key, as the config would have held it
    for key in reversed(path.removeprefix(unknown).split(".")[1:]):
      value = {key: value}
    return door.unknown_key(unknown, value)
  return ConfigError(f"{path} is not in the composed config, so {override} has nothing to set; add it: +{override}")
