"""What each config value may be, as one-line checks: the domains the schema (`config_schema`) declares and
the readers of the settings whose check and meaning are one thing (rates, stopping rule, arms, methods).

No JAX here: the door runs these before anything heavy is imported. Every error is a `ConfigError` that
names the key, the value given and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shiftbench.infra.errors import ConfigError
from shiftbench.rows import schema

# Without pretraining the backbone is random: a row that freezes it measures nothing about invariance
# learned in pretraining, so `scratch` pairs with `full` (and `head` only when asked; `last` never).
SCRATCH_MODES: tuple[str, ...] = ("full", "head")
# Names people type for a key the config spells otherwise (then matched as usual: `lr` finds learning_rates).
SYNONYMS = {"lr": "learning_rate"}
# Optimiser hyperparameters with an obvious domain: name -> (check, what it must be).
OPTIMIZER_DOMAINS: dict[str, tuple[Callable[[float], bool], str]] = {
  "learning_rate": (lambda v: v > 0, "> 0"),
  "b1": (lambda v: 0 <= v < 1, "in [0, 1)"),
  "b2": (lambda v: 0 <= v < 1, "in [0, 1)"),
  "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
  "decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
  "eps": (lambda v: v >= 0, ">= 0"),
  "weight_decay": (lambda v: v >= 0, ">= 0"),
}


def show(value: Any) -> str:
  """A value as the message shows it: strings quoted, so `steps='abc'` reads as the text it was."""
  return repr(value)


def invalid(key: str, value: Any, allowed: str) -> ConfigError:
  return ConfigError(f"{key} must be {allowed}, got {show(value)}")


@dataclasses.dataclass(frozen=True)
class Domain:
  """What one key may hold: `allowed` words it for messages (also for a wrong type); `ok` tests a value of
  the right type (None: the type is all there is to check, or the dataclass checks it itself)."""

  allowed: str
  ok: Callable[[Any], bool] | None = None

  def check(self, key: str, value: Any) -> None:
    if value is not None and self.ok is not None and not self.ok(value):
      raise invalid(key, value, self.allowed)


@dataclasses.dataclass(frozen=True)
class Names(Domain):
  """A non-empty list of names from `choices`; an unknown one is named as `what`."""

  choices: tuple[str, ...] = ()
  what: str = ""

  def check(self, key: str, value: Any) -> None:
    if value is None:
      return
    if not value:
      raise ConfigError(f"{key} is empty; allowed values: {', '.join(self.choices)}")
    for v in value:
      if v not in self.choices:
        raise ConfigError(f"unknown {self.what} {v!r} in {key}={show(list(value))}; allowed: {', '.join(self.choices)}")


def integer(minimum: int | None = None) -> Domain:
  if minimum is None:
    return Domain("an integer")
  return Domain(f"an integer >= {minimum}", lambda v: v >= minimum)


def names(choices: Iterable[str], what: str) -> Names:
  choices = tuple(choices)
  return Names(f"a non-empty list of: {', '.join(choices)}", choices=choices, what=what)


def auto_or_positive(value: Any) -> bool:
  """`auto` (any case) or a positive whole number, as `eval.batch_size` and `steps_per_dispatch` read it."""
  if isinstance(value, str) and value.strip().lower() == "auto":
    return True
  if isinstance(value, bool):
    return False
  try:
    return int(value) >= 1
  except (TypeError, ValueError):
    return False


def is_entry(value: Any) -> bool:
  """A `_target_` entry: a mapping naming what to build; the rest of it is passed to that, unchecked here."""
  return isinstance(value, Mapping) and "_target_" in value


def check_entry(key: str, value: Any, nullable: bool = False) -> None:
  if not (is_entry(value) or (nullable and value is None)):
    raise invalid(key, value, "a mapping with a _target_ (what to build) and its arguments")


def int_list(value: Any, key: str, minimum: int | None = None, example: str = "[0, 1, 2]") -> list[int]:
  """A non-empty list of integers (or one integer), else a `ConfigError` naming `key`."""
  values = list(value) if isinstance(value, Iterable) and not isinstance(value, (str, Mapping)) else [value]
  if not values:
    raise ConfigError(f"{key} is empty; give at least one integer, e.g. {key}={example}")
  for v in values:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
      raise ConfigError(f"{key} must be a list of integers, got {v!r} in {key}={values}; e.g. {key}={example}")
    if minimum is not None and v < minimum:
      raise ConfigError(f"{key} values must be >= {minimum}, got {v} in {key}={values}")
  return [int(v) for v in values]


def optimizer(value: Any, key: str) -> None:
  """Optimiser hyperparameters with an obvious domain (learning rate > 0, betas in [0, 1), ...)."""
  if not isinstance(value, Mapping):
    return
  for name, (ok, domain) in OPTIMIZER_DOMAINS.items():
    v = value.get(name)
    if v is None or isinstance(v, bool) or not isinstance(v, numbers.Real):
      continue  # absent, or a schedule (`_target_`): optax checks those itself
    if not (math.isfinite(v) and ok(v)):
      raise ConfigError(f"{key}.{name} must be {domain}, got {v} ({value.get('_target_', 'optimizer')})")


def location(value: Any, key: str, canvas_size: int, object_size: int) -> None:
  """`[y, x]` top-left of the object, on the canvas (the words of `canvas.CanvasSpec.check_location`)."""
  if value is None:
    return
  if len(value) != 2:
    raise invalid(key, list(value), "[y, x] or null")
  top = canvas_size - object_size
  if not all(0 <= v <= top for v in value):
    raise ConfigError(
      f"{key}={show(list(value))}: location {tuple(value)} puts the object off the canvas; valid top-left "
      f"coordinates are 0..{top} per axis (canvas {canvas_size}, object {object_size})"
    )


def until_accuracy(value: Mapping[str, Any] | None) -> tuple[float, int] | None:
  """`finetune.until_accuracy`: null (train `finetune.steps`) or {threshold, window}."""
  if value is None:
    return None
  threshold, window = float(value["threshold"]), int(value["window"])
  if not 0.0 <= threshold <= 1.0 or window < 1:
    raise ConfigError(
      f"finetune.until_accuracy needs 0 <= threshold <= 1 and window >= 1 steps, got threshold {threshold}, "
      f"window {window}"
    )
  return threshold, window


def rates(rates: Any, own: Any) -> tuple[float, ...]:
  """`finetune.learning_rates` (a list: one row per rate, each with the optimiser built at that rate), or,
  when it is null, the optimiser's own `learning_rate` (`own`: one rate)."""
  if rates is not None and own is not None:
    raise ConfigError(
      f"both finetune.learning_rates ({rates}) and finetune.optimizer.learning_rate ({own}) are set; give the "
      "rates in one place, e.g. 'finetune.learning_rates=[1e-3,1e-2]' (or finetune.learning_rates=null to use "
      "the optimiser's)"
    )
  if rates is None:
    if isinstance(own, bool) or not isinstance(own, (int, float)):
      raise ConfigError(
        f"finetune.optimizer.learning_rate is {own!r}; rows are labelled by their learning rate, so give a "
        "number, or a list in finetune.learning_rates, e.g. 'finetune.learning_rates=[1e-3,1e-2]'"
      )
    return (float(own),)
  rates = list(rates) if isinstance(rates, (list, tuple)) else [rates]
  if not rates:
    raise ConfigError("finetune.learning_rates is empty; give one or more, e.g. 'finetune.learning_rates=[1e-3,1e-2]'")
  for lr in rates:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
      raise ConfigError(f"finetune.learning_rates entries must be numbers > 0, got {lr!r} in {rates}")
  if len(set(rates)) != len(rates):
    raise ConfigError(f"finetune.learning_rates has a rate twice: {rates}")
  return tuple(sorted(float(lr) for lr in rates))


def arms(value: Mapping[str, Any] | None, models: Iterable[str]) -> dict[str, tuple[tuple[str, str], ...]]:
  """`arms`: null (every model runs every regime x mode), or {model: [regime/mode, ...]} restricting the
  models listed to those rows (models not listed run them all)."""
  models = set(models)
  out: dict[str, tuple[tuple[str, str], ...]] = {}
  for model, entries in (value or {}).items():
    if model not in models:
      continue  # a preset's arms for a model this run does not include
    pairs = []
    for entry in entries or []:
      regime, _, mode = str(entry).partition("/")
      if regime not in schema.PRETRAIN_REGIMES or mode not in schema.FINETUNE_MODES:
        raise ConfigError(
          f"arms.{model} entry {entry!r} is not regime/mode; regimes: {', '.join(schema.PRETRAIN_REGIMES)}; "
          f"modes: {', '.join(schema.FINETUNE_MODES)} (e.g. translate/full)"
        )
      pairs.append((regime, mode))
    out[str(model)] = tuple(pairs)
  return out


def method_entries(value: Any, builtin: Mapping[str, str] | None = None) -> list[Any]:
  """`finetune.methods` as a list of entries, each a method's name or a `_target_` mapping (with its own
  arguments and an optional `name:`, which the method checks when it is built). With `builtin` (a
  registered name -> its `_target_`: the registry `shiftbench.methods.BUILTIN`, which imports JAX, so the
  door goes without it), a name becomes its entry and an unknown name is an error."""
  entries = [schema.PLAIN] if value is None else list(value if isinstance(value, (list, tuple)) else [value])
  if not entries:
    raise ConfigError("finetune.methods is empty; give one or more, e.g. 'finetune.methods=[plain,lpft]'")
  out = []
  for entry in entries:
    if isinstance(entry, str):
      if builtin is None:
        out.append(entry)
        continue
      if entry not in builtin:
        raise ConfigError(
          f"unknown fine-tune method {entry!r} in finetune.methods; built in: {', '.join(builtin)}, "
          "or an entry with a _target_ (docs/development.md, 'Add a fine-tune method')"
        )
      entry = {"_target_": builtin[entry]}
    if not is_entry(entry):
      raise ConfigError(f"finetune.methods entry {entry!r} is neither a method name nor a mapping with a _target_")
    out.append(dict(entry))
  return out
