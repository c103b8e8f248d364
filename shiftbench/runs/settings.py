"""The protocol's settings: the Hydra config checked, resolved and built once, at the door.

`Settings.from_config` takes a composed `DictConfig` or a plain dict (both get the same checks: the
schema's, `door.check`, then each `_target_` entry's arguments, `targets.check`), resolves every
interpolation once (`${widths}`, `${data.path}`, `${oc.env:...}`), reads every setting into plain Python,
and builds every `_target_` once: the model factories, the optimisers, the evaluators, the dataset loaders
and the tracker. Nothing below it sees a `DictConfig` or instantiates anything: the protocol, the
checkpoint key and the comparison key all read this one view, so they can never see a literal `${widths}`.
Nothing of the config enters jitted code.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from shiftbench import methods
from shiftbench.data import canvas
from shiftbench.evaluators import batching
from shiftbench.evaluators.suite import Evaluator
from shiftbench.infra.errors import ConfigError
from shiftbench.rows import schema
from shiftbench.runs import config_values, door, plan, row_pool, targets
from shiftbench.training import optimizers as optimizers_lib


def _location(value, spec: canvas.CanvasSpec) -> tuple[int, int] | None:
  return None if value is None else spec.check_location((value[0], value[1]))


def _model_widths(config: dict[str, Any]) -> list[list[int]]:
  """Each model's conv widths (its own, else the global `widths`), for sizing eval batches."""
  default = [int(w) for w in config.get("widths") or [64]]
  return [[int(w) for w in (mcfg or {}).get("widths") or default] for mcfg in (config.get("model") or {}).values()] or [
    default
  ]


@dataclasses.dataclass(frozen=True)
class Phase:
  """One training phase (pretrain or fine-tune): budget, batch and dispatch."""

  steps: int
  batch_size: int
  dispatch: int | str


@dataclasses.dataclass(frozen=True)
class Settings:
  seeds: tuple[int, ...]
  spec: canvas.CanvasSpec
  finetune_location: tuple[int, int]
  pretrain_location: tuple[int, int]
  pretrain_regimes: tuple[str, ...]
  pretrain_jitter: int
  pretrain: Phase
  finetune_modes: tuple[str, ...]
  scratch_modes: tuple[str, ...]
  finetune: Phase
  eval_every: int
  grid_stride: int
  max_objects: int | None
  curve_objects: int
  eval_batch: int
  eval_split: str  # which of B's held-out objects are evaluated: test (report) or validation
  validation_fraction: float  # of each class of B's training objects, held out as validation
  subset_seed: int  # which class-balanced order evaluation subsets are prefixes of
  allow_overlap: bool  # A and B may share class names (else a config error)
  # The resolved config and its parts, plain Python: what checkpoints and comparison keys are made of.
  config: dict[str, Any]
  models: dict[str, dict[str, Any]]
  optimizers: dict[str, dict[str, Any]]  # {"pretrain": ..., "finetune": ...}
  checkpoint_dir: str
  checkpoint_every: int  # pretraining saves a resumable checkpoint this often (0: never)
  wait_timeout_s: float  # how long a job waits for another that pretrains the same model
  compile_cache: bool
  compile_cache_dir: str | None
  overwrite: bool
  reference: bool  # the board ranks the rows beside the shipped reference rows (`shiftbench.rows.reference`)
  row_threads: int  # plan groups run at once (`runs.row_pool`), resolved from `auto`
  # What the config builds, each built once here.
  factories: dict[str, Callable[..., Any]]  # model name -> factory(num_classes, canvas_size, in_channels, rngs)
  transforms: dict[str, Any]  # {"pretrain": ..., "finetune": ...} optax gradient transformations
  evaluators: dict[str, Evaluator]  # `eval.metrics` key -> evaluator
  loaders: dict[str, Callable[[], Any]]  # {"pretrain": ..., "finetune": ...} -> ObjectSet
  tracker: Any  # the experiment tracker (`logger`)
  pretrain_weights: str | dict[str, str] | None = None  # the `imagenet` regime's weights file(s)
  until_accuracy: tuple[float, int] | None = None  # fine-tune stopping rule: (threshold, window of steps)
  finetune_rates: tuple[float, ...] = (1e-3,)  # one row per fine-tune learning rate
  curve_steps: tuple[int, ...] = ()  # early fine-tune curve points, besides every `eval_every` steps
  arms: dict[str, tuple[tuple[str, str], ...]] = dataclasses.field(default_factory=dict)  # model -> (regime, mode)s
  # Fine-tune methods by name (`finetune.methods`, in order), and the settings of each that can change its
  # rows' numbers beyond their identity (its config less its grid: `method.*` in their comparison keys).
  methods: dict[str, methods.Method] = dataclasses.field(default_factory=lambda: {schema.PLAIN: methods.Plain()})
  method_configs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

  @classmethod
  def from_config(cls, cfg: DictConfig | Mapping[str, Any]) -> Settings:
    """Checks `cfg` (a composed Hydra config, or the same as a dict) at the door, resolves it once, checks
    each `_target_` entry's arguments against its target, reads every setting out of it and builds what it
    names. The door has checked every value's domain: what follows reads them."""
    if not isinstance(cfg, DictConfig):
      cfg = OmegaConf.create(dict(cfg))
    config = door.check(cfg)
    targets.check(config)
    return cls._read(config)

  @classmethod
  def _read(cls, config: dict[str, Any]) -> Settings:
    cfg = OmegaConf.create(config)  # attribute access over the resolved tree; nothing left to resolve
    spec = canvas.CanvasSpec(int(cfg.canvas.size), int(cfg.canvas.object_size))
    seeds = list(cfg.seeds) if OmegaConf.is_list(cfg.seeds) else [cfg.seeds]
    ft_loc = _location(cfg.finetune.location, spec) or spec.center()
    pre_loc = _location(cfg.pretrain.location, spec) or ft_loc
    max_objects = cfg.eval.max_objects
    model_configs = dict(config.get("model") or {})
    factories = {name: hydra.utils.instantiate(mcfg) for name, mcfg in model_configs.items()}
    optimizers = {p: config[p]["optimizer"] for p in ("pretrain", "finetune")}
    data = {"pretrain": config["data"]["pretrain"], "finetune": config["data"]["finetune"]}
    rates = config_values.rates(config["finetune"].get("learning_rates"), optimizers["finetune"].get("learning_rate"))
    built_methods, method_configs = _methods(config["finetune"].get("methods"))
    no_logger = {"_target_": "shiftbench.reporting.tracking.WandbTracker", "mode": "disabled"}
    logger = dict(config.get("logger") or no_logger)
    # Every setting but the eval batch, each read, checked and built.
    fields = dict(
      seeds=tuple(int(s) for s in seeds),
      spec=spec,
      finetune_location=ft_loc,
      pretrain_location=pre_loc,
      pretrain_regimes=tuple(cfg.pretrain.regimes),
      pretrain_jitter=int(cfg.pretrain.jitter),
      pretrain=Phase(int(cfg.pretrain.steps), int(cfg.pretrain.batch_size), cfg.pretrain.steps_per_dispatch),
      finetune_modes=tuple(cfg.finetune.modes),
      scratch_modes=tuple(cfg.finetune.get("scratch_modes", ["full"])),
      finetune=Phase(int(cfg.finetune.steps), int(cfg.finetune.batch_size), cfg.finetune.steps_per_dispatch),
      eval_every=max(0, int(cfg.finetune.eval_every)),
      grid_stride=int(cfg.eval.grid_stride),
      max_objects=None if max_objects is None else int(max_objects),
      curve_objects=int(cfg.eval.curve_objects),
      eval_split=str(cfg.eval.get("split", "test")),
      validation_fraction=float(cfg.eval.get("validation_fraction", 0.1)),
      subset_seed=int(cfg.eval.get("subset_seed", 0)),
      allow_overlap=bool(cfg.data.get("allow_overlap", False)),
      config=config,
      models=model_configs,
      optimizers=optimizers,
      factories=factories,
      transforms={
        "pretrain": targets.build("pretrain.optimizer", optimizers["pretrain"]),
        "finetune": _finetune_transforms(optimizers["finetune"], rates),
      },
      evaluators=build_evaluators(config["eval"].get("metrics")),
      loaders={side: hydra.utils.instantiate(dcfg, _partial_=True) for side, dcfg in data.items()},
      tracker=targets.build("logger", logger),
      checkpoint_dir=str(config["paths"]["checkpoint_dir"]),
      checkpoint_every=max(0, int(cfg.pretrain.get("checkpoint_every") or 0)),
      wait_timeout_s=float(cfg.pretrain.get("wait_timeout_s", 7200)),
      compile_cache=bool(config.get("compile_cache", False)),
      compile_cache_dir=config["paths"].get("compile_cache_dir"),
      overwrite=bool(config.get("overwrite", False)),
      reference=bool(config.get("reference", True)),
      row_threads=row_pool.resolve_threads(config.get("row_threads", "auto")),
      pretrain_weights=_weights(cfg, factories),
      until_accuracy=config_values.until_accuracy(config["finetune"].get("until_accuracy")),
      finetune_rates=rates,
      curve_steps=tuple(sorted({int(v) for v in cfg.finetune.get("curve_steps") or []})),
      arms=config_values.arms(config.get("arms"), model_configs),
      methods=built_methods,
      method_configs=method_configs,
    )
    # Then the eval batch, in its own step: `auto` for the torchvision networks compiles them (~40 s for
    # DenseNet-121 at full width), so every other setting is checked, and reported, before the count.
    eval_batch = batching.resolve_batch_size(
      cfg.eval.batch_size,
      spec.canvas_size,
      _model_widths(config),
      lambda: _activation_bytes(factories, model_configs, spec.canvas_size),
    )
    settings = cls(**fields, eval_batch=eval_batch)
    plan.check_method_needs(settings)
    return settings


def _finetune_transforms(entry: Mapping[str, Any], rates: tuple[float, ...]) -> dict[float, Any]:
  """The fine-tune optimiser at each rate, one optimiser for all (`training.optimizers.at_rates`: the rate is
  in its state, so every rate runs one compiled program). Built at the first rate first, so a target that
  refuses its settings is a `ConfigError` now, not when training starts."""
  targets.build("finetune.optimizer", entry, learning_rate=rates[0])
  return optimizers_lib.at_rates(targets.build("finetune.optimizer", entry, _partial_=True), rates)


def build_evaluators(cfg: Mapping[str, Any] | None) -> dict[str, Evaluator]:
  """Every evaluator of the `eval.metrics` config, keyed by its prefix."""
  out = {}
  for prefix, entry in (cfg or {}).items():
    evaluator = targets.build(f"eval.metrics.{prefix}", entry)
    if not isinstance(evaluator, Evaluator):
      raise TypeError(f"eval.metrics.{prefix} must build a shiftbench.evaluators.Evaluator, got {type(evaluator)}")
    out[str(prefix)] = evaluator
  return out


def _model_class(factory: Callable[..., Any]) -> type | None:
  """The class a model factory builds (a `_partial_` of it, or the class itself)."""
  target = factory.func if isinstance(factory, functools.partial) else factory
  return target if isinstance(target, type) else None


def _activation_bytes(
  factories: Mapping[str, Callable[..., Any]], model_configs: Mapping[str, Any], canvas_size: int
) -> int | None:
  """The largest per-canvas activation count of the run's torchvision models (abstract, nothing allocated);
  None when it has none (the small CNNs keep the width-based bound). Once per process for the same
  models, canvas and backend (a sweep's jobs in one process compile the count once)."""
  import jax

  from shiftbench.models.tv_layers import TorchvisionNet

  torchvision = {
    name: factory
    for name, factory in factories.items()
    if (cls := _model_class(factory)) is not None and issubclass(cls, TorchvisionNet)
  }
  if not torchvision:
    return None
  key = (json.dumps({n: model_configs[n] for n in torchvision}, sort_keys=True, default=str), canvas_size)
  key += (jax.devices()[0].platform,)  # the count is the default device's
  if key not in _ACTIVATION_BYTES:
    from flax import nnx

    counts = []
    for factory in torchvision.values():
      model = nnx.eval_shape(lambda f=factory: f(num_classes=2, canvas_size=canvas_size, rngs=nnx.Rngs(0)))
      counts.append(batching.model_activation_bytes(model, canvas_size, 1))
    _ACTIVATION_BYTES[key] = max(counts)
  return _ACTIVATION_BYTES[key]


_ACTIVATION_BYTES: dict[tuple, int] = {}


def _weights(cfg: DictConfig, factories: Mapping[str, Callable[..., Any]]) -> str | dict[str, str] | None:
  """`pretrain.weights` (a path or a published name such as IMAGENET1K_V1, or model name -> either),
  required when the `imagenet` regime runs."""
  weights = cfg.pretrain.get("weights")
  weights = OmegaConf.to_container(weights, resolve=True) if OmegaConf.is_dict(weights) else weights
  if "imagenet" in cfg.pretrain.regimes:
    from shiftbench.models import torchvision_weights as tvw

    for name, factory in factories.items():
      tvw.check_weights(weights, str(name), lambda f=factory: tvw.arch_of(f))  # one line now, not after other rows
  return weights


def resolved_arguments(method: methods.Method, entry: Mapping[str, Any]) -> dict[str, Any]:
  """`entry` (a method's `_target_` entry, less its name) with every constructor argument it leaves out at
  its default, so a changed default changes the rows' keys (LP-FT's, issue 32). A function method (`_partial_`)
  or a class taking `**kwargs` only has what the entry gives. Defaults are written as JSON would have
  them (tuples as lists), so an entry that gives a default's value has the same key as one that leaves it."""
  own = dict(entry)
  if isinstance(method, methods.FunctionMethod):
    return own
  try:
    parameters = inspect.signature(type(method)).parameters.values()
  except (TypeError, ValueError):  # no signature to read
    return own
  for arg in parameters:
    if arg.name not in own and arg.default is not arg.empty and arg.kind not in (arg.VAR_POSITIONAL, arg.VAR_KEYWORD):
      own[arg.name] = _as_json(arg.default)
  return own


def _as_json(value: Any) -> Any:
  if isinstance(value, (tuple, list)):
    return [_as_json(v) for v in value]
  return value


def _methods(value) -> tuple[dict[str, methods.Method], dict[str, dict[str, Any]]]:
  """`finetune.methods`: a list of registered method names (`methods.BUILTIN`) or `_target_` entries (with
  an optional `name:`), each built once; and each method's settings for the comparison key: its resolved
  constructor arguments (`resolved_arguments`: the entry's, and the defaults of those it leaves out) less
  its grid (the rows' `method_setting`) and name (plain has none, so plain rows keep the keys they have
  without methods)."""
  built: dict[str, methods.Method] = {}
  configs: dict[str, dict[str, Any]] = {}
  for entry in config_values.method_entries(value, targets.builtin_methods()):
    name = entry.pop("name", None)
    try:
      method = methods.as_method(hydra.utils.instantiate(entry), name)
    except InstantiationException as e:  # the method's own one-line error, not Hydra's wrapping of it
      cause = e.__cause__ or e
      raise ConfigError(f"finetune.methods entry {entry}: {str(cause).splitlines()[-1]}") from e
    except (ValueError, TypeError) as e:
      raise ConfigError(f"finetune.methods entry {entry}: {e}") from e
    if method.name in built:
      raise ConfigError(f"finetune.methods has the method {method.name!r} twice; give one a name: key")
    if method.mode not in schema.FINETUNE_MODES:
      raise ConfigError(f"method {method.name!r} has mode {method.mode!r}; allowed: {', '.join(schema.FINETUNE_MODES)}")
    built[method.name] = method
    own = {k: v for k, v in resolved_arguments(method, entry).items() if k != method.grid_arg()}
    configs[method.name] = {} if method.name == schema.PLAIN else own
  needing = [m.name for m in built.values() if m.needs and schema.PLAIN not in built]
  if needing:
    modes = ", ".join(sorted({n for m in built.values() for n in m.needs}))
    raise ConfigError(
      f"finetune.methods {needing} start from plain rows ({modes}); "
      f"add plain to finetune.methods, e.g. 'finetune.methods=[plain,{','.join(needing)}]'"
    )
  return built, configs
