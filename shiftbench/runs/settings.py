"""The protocol's settings: the Hydra config checked, resolved and built once, at the door.

`Settings.from_config` takes a composed `DictConfig` or a plain dict (both get the same checks,
`preflight.check_config`), resolves every interpolation once (`${widths}`, `${data.path}`,
`${oc.env:...}`), reads every setting into plain Python, and builds every `_target_` once: the model
factories, the optimisers, the evaluators, the dataset loaders and the tracker. Nothing below it sees a
`DictConfig` or instantiates anything: the protocol, the checkpoint key and the comparison key all read
this one view, so they can never see a literal `${widths}`. Nothing of the config enters jitted code.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from shiftbench import methods
from shiftbench.data import canvas
from shiftbench.evaluators import batching
from shiftbench.evaluators.suite import Evaluator
from shiftbench.infra.errors import ConfigError
from shiftbench.rows import schema
from shiftbench.runs import plan, preflight

# Without pretraining the backbone is random: a row that freezes it measures nothing about invariance
# learned in pretraining, so `scratch` pairs with `full` (and `head` only when asked; `last` never).
SCRATCH_MODES: tuple[str, ...] = ("full", "head")


def _choices(values, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
  values = tuple(values)
  if not values:
    raise ValueError(f"{what} is empty; allowed values: {', '.join(allowed)}")
  for v in values:
    if v not in allowed:
      raise ValueError(f"unknown {what} {v!r}; allowed: {', '.join(allowed)}")
  return values


def _location(value, spec: canvas.CanvasSpec, what: str) -> tuple[int, int] | None:
  if value is None:
    return None
  value = list(value)
  if len(value) != 2:
    raise ValueError(f"{what} must be [y, x] or null, got {value}")
  return spec.check_location((value[0], value[1]))


def _fraction(value, what: str) -> float:
  value = float(value)
  if not 0.0 <= value < 1.0:
    raise ConfigError(f"{what} must lie in [0, 1), got {value}")
  return value


def _positive(value, what: str) -> int:
  if int(value) < 1:
    raise ValueError(f"{what} must be >= 1, got {value}")
  return int(value)


def _model_widths(config: dict[str, Any]) -> list[list[int]]:
  """Each model's conv widths (its own, else the global `widths`), for sizing eval batches."""
  default = [int(w) for w in config.get("widths") or [64]]
  return [[int(w) for w in (mcfg or {}).get("widths") or default] for mcfg in (config.get("model") or {}).values()] or [
    default
  ]


def resolve(cfg: DictConfig) -> dict[str, Any]:
  """The config as plain Python with every interpolation resolved; a `ConfigError` naming the key that
  cannot be resolved (e.g. `data.path` left at `???`)."""
  try:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
  except OmegaConfBaseException as e:
    key = getattr(e, "full_key", None) or "?"
    raise ConfigError(
      f"config key {key} cannot be resolved ({type(e).__name__}: "
      f"{str(e).splitlines()[0]}); set it on the command line, e.g. {key}=..."
    ) from e


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
    """Checks `cfg` (a composed Hydra config, or the same as a dict), resolves it once, reads every
    setting out of it and builds what it names."""
    if not isinstance(cfg, DictConfig):
      cfg = OmegaConf.create(dict(cfg))
    preflight.check_config(cfg)
    return cls._read(resolve(cfg))

  @classmethod
  def _read(cls, config: dict[str, Any]) -> Settings:
    cfg = OmegaConf.create(config)  # attribute access over the resolved tree; nothing left to resolve
    spec = canvas.CanvasSpec(int(cfg.canvas.size), int(cfg.canvas.object_size))
    seeds = list(cfg.seeds) if OmegaConf.is_list(cfg.seeds) else [cfg.seeds]
    if not seeds:
      raise ValueError("seeds is empty; give at least one, e.g. seeds=[0,1,2]")
    ft_loc = _location(cfg.finetune.location, spec, "finetune.location") or spec.center()
    pre_loc = _location(cfg.pretrain.location, spec, "pretrain.location") or ft_loc
    jitter = int(cfg.pretrain.jitter)
    if jitter < 0:
      raise ValueError(f"pretrain.jitter must be >= 0, got {jitter}")
    max_objects = cfg.eval.max_objects
    model_configs = dict(config.get("model") or {})
    factories = {name: hydra.utils.instantiate(mcfg) for name, mcfg in model_configs.items()}
    optimizers = {p: config[p]["optimizer"] for p in ("pretrain", "finetune")}
    data = {"pretrain": config["data"]["pretrain"], "finetune": config["data"]["finetune"]}
    rates = _rates(cfg.finetune)
    built_methods, method_configs = _methods(config["finetune"].get("methods"))
    logger = dict(
      config.get("logger") or {"_target_": "shiftbench.reporting.tracking.WandbTracker", "mode": "disabled"}
    )
    # Every setting but the eval batch, each read, checked and built.
    fields = dict(
      seeds=tuple(int(s) for s in seeds),
      spec=spec,
      finetune_location=ft_loc,
      pretrain_location=pre_loc,
      pretrain_regimes=_choices(cfg.pretrain.regimes, schema.PRETRAIN_REGIMES, "pretrain regime"),
      pretrain_jitter=jitter,
      pretrain=Phase(
        _positive(cfg.pretrain.steps, "pretrain.steps"),
        _positive(cfg.pretrain.batch_size, "pretrain.batch_size"),
        cfg.pretrain.steps_per_dispatch,
      ),
      finetune_modes=_choices(cfg.finetune.modes, schema.FINETUNE_MODES, "fine-tune mode"),
      scratch_modes=_choices(
        cfg.finetune.get("scratch_modes", ["full"]),
        SCRATCH_MODES,
        "finetune.scratch_modes entry (modes run for the scratch regime)",
      ),
      finetune=Phase(
        _positive(cfg.finetune.steps, "finetune.steps"),
        _positive(cfg.finetune.batch_size, "finetune.batch_size"),
        cfg.finetune.steps_per_dispatch,
      ),
      eval_every=max(0, int(cfg.finetune.eval_every)),
      grid_stride=_positive(cfg.eval.grid_stride, "eval.grid_stride"),
      max_objects=None if max_objects is None else _positive(max_objects, "eval.max_objects"),
      curve_objects=_positive(cfg.eval.curve_objects, "eval.curve_objects"),
      eval_split=_choices([cfg.eval.get("split", "test")], ("test", "validation"), "eval.split")[0],
      validation_fraction=_fraction(cfg.eval.get("validation_fraction", 0.1), "eval.validation_fraction"),
      subset_seed=int(cfg.eval.get("subset_seed", 0)),
      allow_overlap=bool(cfg.data.get("allow_overlap", False)),
      config=config,
      models=model_configs,
      optimizers=optimizers,
      factories=factories,
      transforms={
        "pretrain": hydra.utils.instantiate(optimizers["pretrain"]),
        "finetune": {lr: hydra.utils.instantiate(optimizers["finetune"], learning_rate=lr) for lr in rates},
      },
      evaluators=build_evaluators(config["eval"].get("metrics")),
      loaders={side: hydra.utils.instantiate(dcfg, _partial_=True) for side, dcfg in data.items()},
      tracker=hydra.utils.instantiate(logger),
      checkpoint_dir=str(config["paths"]["checkpoint_dir"]),
      checkpoint_every=max(0, int(cfg.pretrain.get("checkpoint_every") or 0)),
      wait_timeout_s=float(cfg.pretrain.get("wait_timeout_s", 7200)),
      compile_cache=bool(config.get("compile_cache", False)),
      compile_cache_dir=config["paths"].get("compile_cache_dir"),
      overwrite=bool(config.get("overwrite", False)),
      pretrain_weights=_weights(cfg, factories),
      until_accuracy=_until_accuracy(cfg.finetune.get("until_accuracy")),
      finetune_rates=rates,
      curve_steps=tuple(
        sorted({_positive(v, "finetune.curve_steps entry") for v in cfg.finetune.get("curve_steps") or []})
      ),
      arms=_arms(config.get("arms"), model_configs),
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


def build_evaluators(cfg: Mapping[str, Any] | None) -> dict[str, Evaluator]:
  """Every evaluator of the `eval.metrics` config, keyed by its prefix."""
  out = {}
  for prefix, entry in (cfg or {}).items():
    evaluator = hydra.utils.instantiate(entry)
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


def _until_accuracy(value) -> tuple[float, int] | None:
  """`finetune.until_accuracy`: null (train `finetune.steps`) or {threshold, window}."""
  if value is None:
    return None
  if "patience" in value:
    raise ConfigError(
      "finetune.until_accuracy.patience was replaced by window (the running mean of training accuracy over "
      "that many steps must reach the threshold); e.g. finetune.until_accuracy={threshold: 0.95, window: 200}"
    )
  threshold, window = float(value.threshold), int(value.window)
  if not 0.0 <= threshold <= 1.0 or window < 1:
    raise ConfigError(
      f"finetune.until_accuracy needs 0 <= threshold <= 1 and window >= 1 steps, got threshold {threshold}, "
      f"window {window}"
    )
  return threshold, window


def _rates(finetune) -> tuple[float, ...]:
  """`finetune.learning_rates` (a list: one row per rate, each with the optimiser built at that rate), or,
  when it is null, the optimiser's own `learning_rate` (one rate)."""
  rates, own = finetune.get("learning_rates"), finetune.optimizer.get("learning_rate")
  if rates is not None and own is not None:
    raise ConfigError(
      f"both finetune.learning_rates ({list(rates) if OmegaConf.is_list(rates) else rates}) and "
      f"finetune.optimizer.learning_rate ({own}) are set; give the rates in one place, e.g. "
      "'finetune.learning_rates=[1e-3,1e-2]' (or finetune.learning_rates=null to use the optimiser's)"
    )
  if rates is None:
    if isinstance(own, bool) or not isinstance(own, (int, float)):
      raise ConfigError(
        f"finetune.optimizer.learning_rate is {own!r}; rows are labelled by their learning rate, so give a "
        "number, or a list in finetune.learning_rates, e.g. 'finetune.learning_rates=[1e-3,1e-2]'"
      )
    return (float(own),)
  rates = list(rates) if OmegaConf.is_list(rates) or isinstance(rates, (list, tuple)) else [rates]
  if not rates:
    raise ConfigError("finetune.learning_rates is empty; give one or more, e.g. 'finetune.learning_rates=[1e-3,1e-2]'")
  for lr in rates:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
      raise ConfigError(f"finetune.learning_rates entries must be numbers > 0, got {lr!r} in {rates}")
  if len(set(rates)) != len(rates):
    raise ConfigError(f"finetune.learning_rates has a rate twice: {rates}")
  return tuple(sorted(float(lr) for lr in rates))


def _arms(value, model_configs: Mapping[str, Any]) -> dict[str, tuple[tuple[str, str], ...]]:
  """`arms`: null (every model runs every regime x mode), or {model: [regime/mode, ...]} restricting the
  models listed to those rows (models not listed run them all)."""
  out: dict[str, tuple[tuple[str, str], ...]] = {}
  for model, entries in (value or {}).items():
    if model not in model_configs:
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


def _methods(value) -> tuple[dict[str, methods.Method], dict[str, dict[str, Any]]]:
  """`finetune.methods`: a list of registered method names (`methods.BUILTIN`) or `_target_` entries (with
  an optional `name:`), each built once; and each method's settings for the comparison key: the entry
  less its grid (the rows' `method_setting`) and name (plain has none, so plain rows keep the keys they
  have without methods)."""
  entries = [schema.PLAIN] if value is None else list(value if isinstance(value, (list, tuple)) else [value])
  if not entries:
    raise ConfigError("finetune.methods is empty; give one or more, e.g. 'finetune.methods=[plain,lpft]'")
  built: dict[str, methods.Method] = {}
  configs: dict[str, dict[str, Any]] = {}
  for entry in entries:
    if isinstance(entry, str):
      if entry not in methods.BUILTIN:
        raise ConfigError(
          f"unknown fine-tune method {entry!r} in finetune.methods; built in: {', '.join(methods.BUILTIN)}, "
          "or an entry with a _target_ (docs/development.md, 'Add a fine-tune method')"
        )
      entry = {"_target_": methods.target(methods.BUILTIN[entry])}
    if not isinstance(entry, dict) or "_target_" not in entry:
      raise ConfigError(f"finetune.methods entry {entry!r} is neither a method name nor a mapping with a _target_")
    entry = dict(entry)
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
    own = {k: v for k, v in entry.items() if k != method.grid_arg()}
    configs[method.name] = {} if method.name == schema.PLAIN else own
  needing = [m.name for m in built.values() if m.needs and schema.PLAIN not in built]
  if needing:
    modes = ", ".join(sorted({n for m in built.values() for n in m.needs}))
    raise ConfigError(
      f"finetune.methods {needing} start from plain rows ({modes}); "
      f"add plain to finetune.methods, e.g. 'finetune.methods=[plain,{','.join(needing)}]'"
    )
  return built, configs
