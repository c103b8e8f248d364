"""A `_target_` entry's own keys, checked against what its target takes before anything is built, and the
entry built.

The schema passes an entry's arguments through (a user's model takes what it takes); here the target is
imported and a key that names none of its parameters is one line, with the nearest parameter. Targets that
take `**kwargs`, or have no signature, are left to the call itself; a target that refuses a value when it is
built (`build`) is one line too, naming the entry.
"""

from __future__ import annotations

import difflib
import inspect
import json
from collections.abc import Iterator, Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate

from shiftbench.infra.errors import ConfigError
from shiftbench.runs import config_values
from shiftbench.runs.config_values import SYNONYMS, show

# Keys Hydra reads itself when it instantiates an entry, and a method entry's own `name:` (its rows' label).
NOT_ARGUMENTS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
# What the protocol calls a model entry's target with (`runs.protocol.Protocol.build`), besides its own keys.
MODEL_ARGUMENTS = ("num_classes", "canvas_size", "in_channels", "rngs")


def entries(config: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
  """Every `_target_` entry the protocol builds from a resolved config, with its dotted key."""
  for name, entry in (config.get("model") or {}).items():
    yield f"model.{name}", entry
  for phase in ("pretrain", "finetune"):
    yield f"data.{phase}", config["data"][phase]
    yield f"{phase}.optimizer", config[phase]["optimizer"]
  for prefix, entry in (config["eval"].get("metrics") or {}).items():
    yield f"eval.metrics.{prefix}", entry
  for i, entry in enumerate(config_values.method_entries(config["finetune"].get("methods"), builtin_methods())):
    yield f"finetune.methods[{i}]", {k: v for k, v in entry.items() if k != "name"}
  if config.get("logger"):
    yield "logger", config["logger"]


def builtin_methods() -> dict[str, str]:
  """The methods a `finetune.methods` entry may name (`shiftbench.methods.BUILTIN`, the one registry, with
  the ones a user registered), each with the `_target_` its rows' keys hold."""
  from shiftbench import methods  # JAX: past the door

  return {name: methods.target(cls) for name, cls in methods.BUILTIN.items()}


def check(config: Mapping[str, Any]) -> None:
  for key, entry in entries(config):
    check_arguments(key, entry)
    if key.startswith("model."):
      check_model_entry(key, entry)


def check_model_entry(key: str, entry: Mapping[str, Any]) -> None:
  """A model entry is a factory (`_partial_: true`) whose target takes what the protocol gives it."""
  wanted = ", ".join(MODEL_ARGUMENTS)
  if entry.get("_partial_") is not True:
    given = json.dumps(entry["_partial_"], default=str) if "_partial_" in entry else "not set"
    raise ConfigError(
      f"{key}._partial_ is {given}: a model entry needs _partial_: true (the protocol "
      f"builds the model itself, once per dataset and seed, calling it with {wanted})"
    )
  built = get_object(entry["_target_"])  # check_arguments has imported it
  try:
    parameters = inspect.signature(built.__init__ if inspect.isclass(built) else built).parameters.values()
  except (TypeError, ValueError):
    return
  if any(p.kind is p.VAR_KEYWORD for p in parameters):
    return
  takes = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
  missing = [a for a in MODEL_ARGUMENTS if a not in takes]
  if missing:
    raise ConfigError(
      f"{key}: {entry['_target_']} does not take {', '.join(map(repr, missing))}; the protocol calls a "
      f"model with {wanted} (docs/api.md): add them (or **kwargs) to its signature"
    )


def check_models(
  factories: Mapping[str, Any], configs: Mapping[str, Any], num_classes: int, canvas_size: int, in_channels: int
) -> None:
  """Each model whose target is not one of shiftbench's, built on abstract shapes (nothing allocated), meets
  the model protocol (`models.ShiftModel`), else one `ConfigError` line saying what it lacks; before
  anything trains. The shipped presets are tested to (tests/test_shift_model.py)."""
  from flax import nnx  # JAX: past the door

  from shiftbench.models import shift_model

  for name, factory in factories.items():
    target = str(configs[name]["_target_"])
    if target.startswith("shiftbench."):
      continue
    call = f"num_classes={num_classes}, canvas_size={canvas_size}, in_channels={in_channels}, rngs=nnx.Rngs(0)"
    try:
      model = nnx.eval_shape(
        lambda f=factory: f(num_classes=num_classes, canvas_size=canvas_size, in_channels=in_channels, rngs=nnx.Rngs(0))
      )
    except Exception as e:
      raise ConfigError(f"model.{name}: {target}({call}) fails ({type(e).__name__}: {e})") from e
    problems = shift_model.mismatches(model, num_classes, canvas_size, in_channels)
    if problems:
      raise ConfigError(
        f"model.{name}: {target} does not meet the model protocol (shiftbench.models.ShiftModel, docs/api.md): "
        + "; ".join(problems)
      )


def check_arguments(key: str, entry: Mapping[str, Any]) -> None:
  """Each key of `entry` names a parameter of its `_target_`, else a `ConfigError` naming it."""
  target = entry["_target_"]
  try:
    built = get_object(target)
  except Exception as e:  # ImportError, or the target module's own error on import
    raise ConfigError(f"{key}._target_={target!r} cannot be imported ({type(e).__name__}: {e})") from e
  try:
    # A class's own __init__: a metaclass's __call__ (Flax NNX modules have one) would say only *args, **kwargs.
    parameters = list(inspect.signature(built.__init__ if inspect.isclass(built) else built).parameters.values())
  except (TypeError, ValueError):
    return
  parameters = parameters[1:] if inspect.isclass(built) else parameters  # not `self`
  if any(p.kind is p.VAR_KEYWORD for p in parameters):
    return
  takes = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
  for arg, value in entry.items():
    if arg in NOT_ARGUMENTS or arg in takes:
      continue
    close = difflib.get_close_matches(SYNONYMS.get(str(arg), str(arg)), takes, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
      f"{key}.{arg}={show(value)}: {target} takes no argument {arg!r}; {hint}it takes: {', '.join(takes)}"
    )


def build(key: str, entry: Mapping[str, Any], **kwargs: Any) -> Any:
  """`entry` instantiated; the target's own refusal of an argument (a ValueError or TypeError, which Hydra
  wraps with the call) as a `ConfigError` naming the entry, e.g. `logger: unknown logger.mode 'cloud'`."""
  try:
    return instantiate(entry, **kwargs)
  except InstantiationException as e:
    if isinstance(e.__cause__, (ValueError, TypeError)):
      raise ConfigError(f"{key}: {e.__cause__}") from e
    raise
