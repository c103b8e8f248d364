"""The config's schema: every key the protocol defines, with its type and what it may hold, one dataclass per
config group (`conf/<group>/`) under `Config`, the root.

`door.check` merges a composed config into `Config` (OmegaConf refuses a key the schema does not define and a
value of the wrong type) and then builds the dataclasses, whose `__post_init__` checks each field's `Domain`
and what spans several keys. A `_target_` entry (a model, optimiser, evaluator, dataset loader, method or
logger) is typed `Any`: the schema asks only that it names a `_target_`; its other keys are the target's own
arguments, passed through (`targets` checks their names against the target's signature when it is built).

A default here is the value the reader (`settings.Settings`) assumes for a key a config leaves out.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar

from omegaconf import MISSING

from shiftbench.infra.errors import ConfigError
from shiftbench.rows import schema
from shiftbench.runs import config_values as values
from shiftbench.runs.config_values import Domain, integer, names

# Keys that were renamed: the message a config still using the old one gets instead of "unknown key".
RENAMED = {
  "finetune.until_accuracy.patience": "finetune.until_accuracy.patience was replaced by window (the running mean "
  "of training accuracy over that many steps must reach the threshold); e.g. "
  "finetune.until_accuracy={threshold: 0.95, window: 200}",
}
_ENTRY = Domain("a mapping with a _target_ (what to build) and its arguments")


def setting(domain: Domain, default: Any = MISSING) -> Any:
  """A schema field: its domain, and the default the reader assumes (MISSING: the config must set it)."""
  if isinstance(default, (list, dict)):
    return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"domain": domain})
  return dataclasses.field(default=default, metadata={"domain": domain})


class Group:
  """A config group: each field's domain is checked, then `check` (what spans several of its keys)."""

  KEY: ClassVar[str] = ""  # where the group sits in the config ("" for the root)

  def __post_init__(self) -> None:
    for f in dataclasses.fields(self):  # type: ignore[arg-type]
      domain = f.metadata.get("domain")
      if domain is not None:
        domain.check(f"{self.KEY}.{f.name}".lstrip("."), getattr(self, f.name))
    self.check()

  def check(self) -> None:
    pass


@dataclasses.dataclass
class Canvas(Group):
  KEY: ClassVar[str] = "canvas"
  size: int = setting(integer(1))
  object_size: int = setting(integer(1))

  def check(self) -> None:
    if self.object_size > self.size:
      raise ConfigError(
        f"canvas.object_size={self.object_size} is larger than canvas_size={self.size} (canvas.size): an "
        f"object must fit inside the canvas, so canvas.object_size must be 1..{self.size}"
      )


@dataclasses.dataclass
class Paths(Group):
  KEY: ClassVar[str] = "paths"
  checkpoint_dir: str = setting(Domain("a directory"))
  compile_cache_dir: str | None = setting(Domain("a directory or null"), None)


@dataclasses.dataclass
class Data(Group):
  KEY: ClassVar[str] = "data"
  pretrain: Any = setting(_ENTRY)  # dataset A's loader: its arguments are the loader's
  finetune: Any = setting(_ENTRY)  # dataset B's
  data_dir: str | None = setting(Domain("a directory or null"), None)
  path: str | None = setting(Domain("a file"), None)  # data=npz
  allow_overlap: bool = setting(Domain("true or false"), False)

  def check(self) -> None:
    values.check_entry("data.pretrain", self.pretrain)
    values.check_entry("data.finetune", self.finetune)


_AUTO_OR_POSITIVE = _DISPATCH = Domain("'auto' or an integer >= 1", values.auto_or_positive)
_LOCATION = Domain("[y, x] (two integers) or null")


@dataclasses.dataclass
class Pretrain(Group):
  KEY: ClassVar[str] = "pretrain"
  regimes: list[str] = setting(names(schema.PRETRAIN_REGIMES, "pretrain regime"))
  steps: int = setting(integer(1))
  batch_size: int = setting(integer(1))
  jitter: int = setting(integer(0))
  steps_per_dispatch: Any = setting(_DISPATCH)
  optimizer: Any = setting(_ENTRY)
  location: list[int] | None = setting(_LOCATION, None)
  checkpoint_every: int | None = setting(integer(0), None)
  wait_timeout_s: float = setting(Domain("a number of seconds (< 0: wait for ever)"), 7200.0)
  weights: Any = setting(
    Domain(
      "null, a published weights name or file, or {model: name or file}",
      lambda v: isinstance(v, str) or (isinstance(v, dict) and all(isinstance(w, str) for w in v.values())),
    ),
    None,
  )

  def check(self) -> None:
    values.check_entry("pretrain.optimizer", self.optimizer)
    values.optimizer(self.optimizer, "pretrain.optimizer")


@dataclasses.dataclass
class UntilAccuracy(Group):
  KEY: ClassVar[str] = "finetune.until_accuracy"
  threshold: float = setting(Domain("a number in [0, 1]"))
  window: int = setting(Domain("an integer >= 1 (steps)"))

  def check(self) -> None:
    values.until_accuracy(dataclasses.asdict(self))


@dataclasses.dataclass
class Finetune(Group):
  KEY: ClassVar[str] = "finetune"
  modes: list[str] = setting(names(schema.FINETUNE_MODES, "fine-tune mode"))
  steps: int = setting(integer(1))
  batch_size: int = setting(integer(1))
  eval_every: int = setting(integer(0))
  steps_per_dispatch: Any = setting(_DISPATCH)
  optimizer: Any = setting(_ENTRY)
  scratch_modes: list[str] = setting(
    names(values.SCRATCH_MODES, "finetune.scratch_modes entry (modes run for the scratch regime)"), ["full"]
  )
  until_accuracy: UntilAccuracy | None = setting(Domain("null or {threshold: 0.95, window: 100}"), None)
  location: list[int] | None = setting(_LOCATION, None)
  curve_steps: list[int] | None = setting(
    Domain("a list of integers >= 1 (steps)", lambda v: all(s >= 1 for s in v)), []
  )
  learning_rates: list[float] | None = setting(Domain("a list of numbers > 0, or null"), None)
  methods: Any = setting(Domain("a list of method names (shiftbench.methods.BUILTIN) or _target_ entries"), None)

  def check(self) -> None:
    values.check_entry("finetune.optimizer", self.optimizer)
    values.optimizer(self.optimizer, "finetune.optimizer")
    values.rates(self.learning_rates, self.optimizer.get("learning_rate"))
    values.method_entries(self.methods)


@dataclasses.dataclass
class Eval(Group):
  KEY: ClassVar[str] = "eval"
  grid_stride: int = setting(integer(1))
  curve_objects: int = setting(integer(1))
  batch_size: Any = setting(Domain("a positive int or 'auto'", values.auto_or_positive))
  max_objects: int | None = setting(Domain("an integer >= 1 or null (the whole split)", lambda v: v >= 1), None)
  subset_seed: int = setting(integer(), 0)
  split: str = setting(Domain("'test' or 'validation'", lambda v: v in ("test", "validation")), "test")
  validation_fraction: float = setting(Domain("a number in [0, 1)", lambda v: 0 <= v < 1), 0.1)
  # Each key is a metric's prefix in results and its value the evaluator's `_target_` entry.
  metrics: dict[str, Any] | None = setting(Domain("{prefix: evaluator entry with a _target_}"), None)

  def check(self) -> None:
    for prefix, entry in (self.metrics or {}).items():
      values.check_entry(f"eval.metrics.{prefix}", entry)


@dataclasses.dataclass
class Config(Group):
  """The root: the groups and the keys of `conf/config.yaml` and the experiment presets."""

  canvas: Canvas = setting(Domain("{size: ..., object_size: ...}"))
  paths: Paths = setting(Domain("{checkpoint_dir: ..., compile_cache_dir: ...}"))
  data: Data = setting(Domain("a data config (conf/data/)"))
  pretrain: Pretrain = setting(Domain("a pretrain config (conf/pretrain/)"))
  finetune: Finetune = setting(Domain("a fine-tune config (conf/finetune/)"))
  eval: Eval = setting(Domain("an eval config (conf/eval/)"))
  seeds: Any = setting(Domain("a list of integers"))
  # Each key names a model and its value is the model's `_target_` entry (several models in one run).
  model: dict[str, Any] = setting(Domain("{name: model entry with a _target_}"), {})
  logger: Any = setting(Domain("a logger entry with a _target_, or null"), None)
  widths: Any = setting(Domain("a list of integers >= 1"), None)
  tv_width: float | None = setting(Domain("a number > 0", lambda v: v > 0), None)
  arms: dict[str, Any] | None = setting(Domain("null or {model: [regime/mode, ...]}"), None)
  overwrite: bool = setting(Domain("true or false"), False)
  reference: bool = setting(Domain("true or false"), True)  # rank the rows beside the shipped reference rows
  compile_cache: bool = setting(Domain("true or false"), False)
  row_threads: Any = setting(_AUTO_OR_POSITIVE, "auto")  # plan groups at once (runs.row_pool)

  def check(self) -> None:
    values.int_list(self.seeds, "seeds")
    if self.widths is not None:
      values.int_list(self.widths, "widths", minimum=1, example="[8, 16, 32]")
    for name, model in self.model.items():
      values.check_entry(f"model.{name}", model)
      if "widths" in model:
        values.int_list(model["widths"], f"model.{name}.widths", minimum=1, example="[8, 16, 32]")
    values.check_entry("logger", self.logger, nullable=True)
    for phase in (self.pretrain, self.finetune):
      values.location(phase.location, f"{phase.KEY}.location", self.canvas.size, self.canvas.object_size)
    values.arms(self.arms, self.model)


def top_level_keys() -> frozenset[str]:
  return frozenset(f.name for f in dataclasses.fields(Config))


def group_at(path: str) -> type[Group] | None:
  """The group whose keys sit at `path` ("" -> Config, "finetune.until_accuracy" -> UntilAccuracy); None
  where the path is no group: inside a `_target_` entry or a free mapping, whose keys pass through."""
  group: type[Group] | None = Config
  for part in filter(None, path.split(".")):
    if group is None or part not in keys_of(group):
      return None
    hint = typing.get_type_hints(group)[part]
    inner = [t for t in typing.get_args(hint) or (hint,) if isinstance(t, type) and issubclass(t, Group)]
    group = inner[0] if inner else None
  return group


def first_unknown(path: str) -> str | None:
  """The first key along `path` that the schema does not define where it defines the keys
  ("finetune.lr.x" -> "finetune.lr"); None when it defines them all or the path passes through."""
  parts = path.split(".")
  for i, part in enumerate(parts):
    group = group_at(".".join(parts[:i]))
    if group is None:
      return None
    if part not in keys_of(group):
      return ".".join(parts[: i + 1])
  return None


def allowed(key: str) -> str:
  """What the schema says `key` may hold ("an integer >= 1"); "" for a key it does not define."""
  parent, _, name = key.rpartition(".")
  group = group_at(parent)
  fields = {f.name: f for f in dataclasses.fields(group)} if group is not None else {}  # type: ignore[arg-type]
  return fields[name].metadata["domain"].allowed if name in fields else ""


def keys_of(group: type[Group]) -> list[str]:
  """The keys a group defines, in the schema's order."""
  return [f.name for f in dataclasses.fields(group)]  # type: ignore[arg-type]
