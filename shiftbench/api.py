"""The Python API: a model through the benchmark in one call (docs/api.md).

`evaluate` runs what `shiftbench` runs on the command line: the same Hydra compose of the packaged configs
(`pkg://shiftbench.conf`), the same config door (`runs.door.check`, then each `_target_`'s arguments), the
same `run_experiment`, the same files in the run directory. It turns its arguments into the Hydra
overrides that the command line would take (`Result.command` prints that command), so an API run and a CLI
run of one config are the same run. `list_models` and `list_experiments` read the shipped presets without
importing JAX.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.resources
import logging
import math
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shiftbench.infra.errors import ConfigError

if TYPE_CHECKING:
  import pandas as pd

CONFIG_MODULE = "shiftbench.conf"  # the CLI's `pkg://shiftbench.conf`
# Top-level config groups: a keyword argument naming one with a string selects that option (`data="mnist"`).
GROUPS = ("data", "eval", "finetune", "logger", "pretrain")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")  # a string Hydra reads back as the same string unquoted
_NOT_PLAIN = {"true", "false", "null", "nan", "inf", "none"}


@dataclasses.dataclass(frozen=True)
class Result:
  """What `evaluate` returns.

  Attributes:
    rows: one line per results row (`shiftbench.reporting.tidy`: identity, keys, differing settings, every
      metric), as `rows.csv` in the run directory holds it.
    run_dir: the run directory (results.json, leaderboard.md, index.html, heatmaps/, ...; docs/outputs.md).
    overrides: the Hydra overrides the run was composed with, in the command line's syntax.
  """

  rows: pd.DataFrame
  run_dir: Path
  overrides: tuple[str, ...]

  @property
  def command(self) -> str:
    """The `shiftbench` command line that runs (or, in the same directory, resumes) this run."""
    return shlex.join(["shiftbench", *self.overrides, f"hydra.run.dir={self.run_dir}"])


def evaluate(
  model: Any = None,
  experiment: str = "quick",
  out_dir: str | Path | None = None,
  *,
  overrides: Sequence[str] = (),
  **settings: Any,
) -> Result:
  """Runs `experiment` for `model`, as `shiftbench experiment=EXPERIMENT model=... KEY=VALUE ...` would.

  Args:
    model: a shipped preset's name (`"cnn_fc"`, see `list_models`); a `_target_` import path
      (`"my_model.MyNet"`); a model class or function, importable by its module's name (not one defined in
      `__main__` or a notebook); a dict entry (`{"_target_": ..., "widths": [8, 16]}`, its other keys the
      target's arguments); `{name: any of these}` to name the rows' model yourself; or a list of them (one
      run, every model). A user model is named by its target's last part (`MyNet`). None: the
      experiment's own models.
    experiment: a preset of `list_experiments()` (`quick`, `smoke`, `reproduce`, ...).
    out_dir: the run directory; None: `outputs/DATE/TIME` under the current directory, as the CLI. A
      directory holding a finished or interrupted run of the same config resumes it (nothing is rerun).
    overrides: Hydra overrides exactly as on the command line (`"+model.MyNet.dropout=0.1"`,
      `"~eval.metrics.flip_rate"`), applied after `settings`.
    **settings: config values by dotted key, each one override `++KEY=VALUE` (added if the config lacks
      the key, so the door names a misspelt one): `seeds=[0, 1]`, `**{"finetune.learning_rates": [1e-3]}`. A
      string for a config group selects its option: `data="mnist"`, `logger="none"`.

  Returns:
    The rows, the run directory and the overrides (`Result.command`: the same run from the command line).

  Raises:
    ConfigError: a model, key or value the config does not allow (one line, as the CLI prints it).
    shiftbench.infra.errors.UserError: any other input the run refuses (data, cache, run directory).
  """
  from omegaconf import OmegaConf

  from shiftbench.infra.files import atomic_write_text
  from shiftbench.reporting import tidy
  from shiftbench.runs import door, log_levels, run_dir, targets

  if not isinstance(experiment, str) or not experiment:
    raise ConfigError(f"experiment must be a preset name, got {experiment!r}; options: {', '.join(list_experiments())}")
  given = [
    f"experiment={experiment}",
    *model_overrides(model),
    *(setting_override(key, value) for key, value in settings.items()),
    *_strings(overrides),
  ]
  cfg = compose(given)
  config = door.check(cfg)  # before JAX: a config mistake is one line in about a second, no run directory
  targets.check(config)
  path = Path(out_dir) if out_dir is not None else _default_run_dir()
  overwrite = bool(config.get("overwrite", False))
  from shiftbench.runs.experiment import run_experiment  # JAX, past the door (as the CLI)

  log_levels.quiet_library_logs()  # as the CLI: no backend probing that reads like a failure

  with run_dir.opened_run_dir(path, config, overwrite) as opened, _log_to(opened.path / "evaluate.log"):
    # What Hydra writes into a CLI run's directory: the composed config and the overrides.
    hydra_dir = opened.path / ".hydra"
    hydra_dir.mkdir(exist_ok=True)
    atomic_write_text(hydra_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(given)))
    run_experiment(cfg, opened.path)
    results = opened.results_path
  return Result(tidy.load_rows([results]), results.parent, tuple(given))


def list_models() -> dict[str, str]:
  """The shipped model presets (`model=NAME`), each with its description (its yaml's first sentence)."""
  return _presets("model")


def list_experiments() -> dict[str, str]:
  """The shipped experiment presets (`experiment=NAME`), each with its description (its first sentence)."""
  return _presets("experiment")


# -- the Hydra compose, as the CLI's ----------------------------------------------------------------------
def compose(overrides: Sequence[str]) -> Any:
  """The config `shiftbench OVERRIDES` composes (the packaged `config.yaml`), without Hydra's own key; Hydra's
  refusals as the CLI's one-line `ConfigError`s. Works inside another Hydra app too (its state is restored)."""
  from hydra import compose as hydra_compose
  from hydra import initialize_config_module

  from shiftbench.runs import hydra_errors

  with _own_global_hydra():
    try:
      with initialize_config_module(CONFIG_MODULE, job_name="evaluate", version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))
    except Exception as e:
      user_error = hydra_errors.as_user_error(e)
      if user_error is None:
        raise
      raise user_error from None


@contextmanager
def _own_global_hydra() -> Iterator[None]:
  """Hydra's global state cleared for the block and put back after it (a caller's own Hydra app keeps its)."""
  from hydra.core.global_hydra import GlobalHydra

  outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
  GlobalHydra.instance().clear()
  try:
    yield
  finally:
    GlobalHydra.instance().clear()
    if outer is not None:
      GlobalHydra.instance().initialize(outer)


def _default_run_dir() -> Path:
  """The CLI's default, `outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}` (conf/config.yaml), under the current
  directory."""
  now = datetime.datetime.now()
  return Path("outputs") / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S")


@contextmanager
def _log_to(path: Path) -> Iterator[None]:
  """The run's INFO lines (one per row, pretraining) into `path`, as the CLI's `cli.log`, for the block."""
  logger = logging.getLogger("shiftbench")
  handler = logging.FileHandler(path)
  handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
  handler.setLevel(logging.INFO)
  level = logger.level
  if level == logging.NOTSET or level > logging.INFO:
    logger.setLevel(logging.INFO)
  logger.addHandler(handler)
  try:
    yield
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
    handler.close()


# -- arguments as Hydra overrides ------------------------------------------------------------------------
def model_overrides(model: Any) -> list[str]:
  """The overrides that select `model` (see `evaluate`): shipped presets as `model=[...]`, the user's
  entries as `+model.NAME.KEY=VALUE` (`model=[]` first when no preset is named, so only they run)."""
  if model is None:
    return []
  items = list(model) if isinstance(model, (list, tuple)) else [model]
  presets: list[str] = []
  entries: dict[str, dict[str, Any]] = {}
  for item in items:
    named = item if isinstance(item, Mapping) and "_target_" not in item else {None: item}
    for name, spec in named.items():
      if isinstance(spec, str) and "." not in spec and name is None:
        presets.append(_preset_name(spec))
        continue
      entry = model_entry(spec)
      name = _model_name(name, entry["_target_"])
      if name in entries or name in presets:
        raise ConfigError(f"two models are named {name!r}; name them yourself: model={{'name': ..., 'other': ...}}")
      entries[name] = entry
  out = [f"model=[{','.join(presets)}]"]
  for name, entry in entries.items():
    out += [f"+model.{name}.{key}={hydra_value(value)}" for key, value in entry.items()]
  return out


def model_entry(spec: Any) -> dict[str, Any]:
  """A model given as a `_target_` path, a class or function, a `functools.partial` of one, or a dict entry,
  as the config entry that names it (`_partial_: true`: the protocol calls it with `num_classes`,
  `canvas_size`, `in_channels` and `rngs`)."""
  if isinstance(spec, Mapping):
    entry = {str(k): v for k, v in spec.items()}
    target = entry.get("_target_")
    if target is None:
      raise ConfigError(f"model entry {spec!r} has no _target_; give one, e.g. {{'_target_': 'my_model.MyNet'}}")
    entry["_target_"] = target if isinstance(target, str) else import_path(target)
  elif isinstance(spec, str):
    entry = {"_target_": spec}
  elif isinstance(spec, functools.partial):
    if spec.args:
      raise ConfigError(
        f"model {spec!r} binds positional arguments; bind them by keyword (functools.partial(f, x=...))"
      )
    entry = {"_target_": import_path(spec.func), **spec.keywords}
  elif callable(spec):
    entry = {"_target_": import_path(spec)}
  else:
    raise ConfigError(
      f"model={spec!r} is not a model: give a preset name ({', '.join(list_models())}), a _target_ path "
      "('my_model.MyNet'), a model class or function, or a dict with a _target_"
    )
  return {"_target_": entry.pop("_target_"), "_partial_": entry.pop("_partial_", True), **entry}


def import_path(obj: Any) -> str:
  """`module.QualName` of a class or function, checked to import back to `obj` in another process: one
  defined in `__main__` (a script run directly, a notebook) or inside a function cannot be."""
  module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
  if not isinstance(module, str) or not isinstance(qualname, str):
    raise ConfigError(f"model {obj!r} has no import path; give a class or function defined in a module")
  if module == "__main__":
    raise ConfigError(
      f"model {qualname} is defined in __main__ (a script or notebook), which a run cannot import by name "
      "(a resumed run, a launcher's job, the CLI); put it in a module, e.g. my_model.py, and import it from there"
    )
  if "<locals>" in qualname:
    raise ConfigError(f"model {module}.{qualname} is defined inside a function; define it at a module's top level")
  path = f"{module}.{qualname}"
  from hydra.utils import get_object

  try:
    found = get_object(path)
  except Exception as e:
    raise ConfigError(f"model {path} cannot be imported by its name ({type(e).__name__}: {e})") from None
  if found is not obj:
    raise ConfigError(f"model {path} imports as another object than the one given; pass its module's own name")
  return path


def _preset_name(name: str) -> str:
  presets = list_models()
  if name not in presets:
    import difflib

    close = difflib.get_close_matches(name, presets, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
      f"model={name!r} is no shipped preset; {hint}presets: {', '.join(presets)} "
      "(your own model: its import path, e.g. 'my_model.MyNet', or the class itself)"
    )
  return name


def _model_name(name: Any, target: str) -> str:
  name = target.rsplit(".", 1)[-1] if name is None else name
  if not isinstance(name, str) or not _NAME.fullmatch(name):
    raise ConfigError(f"model name {name!r} is not a valid config key; use letters, digits and _ (e.g. 'mynet')")
  return name


def setting_override(key: str, value: Any) -> str:
  """One keyword argument of `evaluate` as an override: a group's option (`data=mnist`), else `++KEY=VALUE`
  (set, or added so that the door names a key the config does not define)."""
  if key == "experiment" or key == "hydra" or key.startswith("hydra."):
    raise ConfigError(f"{key}={value!r}: evaluate takes the experiment as its own argument and sets no Hydra key")
  if key in GROUPS and isinstance(value, str):
    return f"{key}={hydra_value(value)}"
  return f"++{key}={hydra_value(value)}"


def hydra_value(value: Any) -> str:
  """`value` in Hydra's override grammar, read back as the same value (strings quoted where they would
  read as another type or hold special characters)."""
  if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
    value = value.item()  # a numpy or JAX scalar
  if value is None:
    return "null"
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, int):
    return str(value)
  if isinstance(value, float):
    return repr(value) if math.isfinite(value) else str(value)  # inf, -inf, nan read back as floats
  if isinstance(value, Path):
    value = str(value)
  if isinstance(value, str):
    if _PLAIN.fullmatch(value) and value.lower() not in _NOT_PLAIN:
      return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
  if isinstance(value, Mapping):
    return "{" + ",".join(f"{_key(k)}:{hydra_value(v)}" for k, v in value.items()) + "}"
  if isinstance(value, (list, tuple)):
    return "[" + ",".join(hydra_value(v) for v in value) + "]"
  if callable(value):  # a _target_ given as the class itself
    return hydra_value(import_path(value))
  raise ConfigError(
    f"setting value {value!r} ({type(value).__name__}) has no config form; use str, number, bool, None, list or dict"
  )


def _key(key: Any) -> str:
  if not isinstance(key, str) or not _NAME.fullmatch(key):
    raise ConfigError(f"dict key {key!r} cannot be a config key; use letters, digits and _")
  return key


def _strings(overrides: Sequence[str]) -> list[str]:
  if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
    raise ConfigError(f"overrides must be a list of strings such as ['seeds=[0,1]'], got {overrides!r}")
  return list(overrides)


# -- the shipped presets ---------------------------------------------------------------------------------
def _presets(group: str) -> dict[str, str]:
  folder = importlib.resources.files(CONFIG_MODULE) / group
  files = sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
  return {f.name.removesuffix(".yaml"): describe(f.read_text()) for f in files}


def describe(text: str, width: int = 130) -> str:
  """A preset's description: the first sentence of its leading comment (`# @package` skipped); past `width`
  characters, only up to its first colon or semicolon outside brackets ("torchvision's vgg16 (models/vgg.py)")."""
  lines = []
  for line in text.splitlines():
    if not line.startswith("#"):
      break
    line = line.lstrip("#").strip()
    if not line.startswith("@package"):
      lines.append(line)
  first = re.split(r"(?<=[.!?])\s+(?=[A-Z`(])", " ".join(lines), maxsplit=1)[0].strip()
  if len(first) > width:
    depth = 0
    for i, char in enumerate(first):
      depth += (char in "([{") - (char in ")]}")
      if depth == 0 and char in ":;":
        first = first[:i]
        break
  return first.rstrip(". ")
