"""torchvision state dicts into the Flax networks, one to one (`from_torchvision`).

Each network lists its layers with their PyTorch names (`torchvision_layers()`); a layer's tensors map by
its kind, with PyTorch's layouts turned into flax's:
  Conv2d       `weight` (O, I, kh, kw) -> `kernel` (kh, kw, I, O); `bias` as is;
  Linear       `weight` (O, I) -> `kernel` (I, O); `bias` as is;
  BatchNorm2d  `weight` -> `scale`, `bias`, `running_mean` -> `mean`, `running_var` -> `var`
               (`num_batches_tracked` is bookkeeping and is ignored).
Every key must be used and every shape must match, or the load fails naming the keys: a state dict of
another architecture or width never loads half-way. The classifier is skipped when the number of classes
differs (the `imagenet` pretrain regime re-initialises it anyway).

Sources: a `.pth`/`.pt` file (read with torch, `weights_only=True`, when torch is installed), a
`.safetensors` file (read with the `safetensors` package, no torch needed) or a mapping of names to arrays.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from shiftbench.infra import hashing
from shiftbench.infra.errors import ConfigError, MissingFileError
from shiftbench.models import published_weights
from shiftbench.models.densenet import DenseNet
from shiftbench.models.resnet_tv import TorchvisionResNet
from shiftbench.models.tv_layers import TorchvisionNet
from shiftbench.models.vgg import VGG

# The factories of the torchvision architectures, by torchvision's names (`resnet18_tv`: torchvision's
# ResNet-18, named apart from shiftbench's CIFAR-sized `resnet18` preset).
ARCHS: dict[str, Callable[..., nnx.Module]] = {
  "vgg11": functools.partial(VGG, depth=11),
  "vgg16": functools.partial(VGG, depth=16),
  "vgg16_bn": functools.partial(VGG, depth=16, batch_norm=True),
  "resnet18_tv": functools.partial(TorchvisionResNet, depth=18),
  "resnet50": functools.partial(TorchvisionResNet, depth=50),
  "densenet121": DenseNet,
}
_FIRST_CONV = {
  "vgg11": "features.0",
  "vgg16": "features.0",
  "vgg16_bn": "features.0",
  "resnet18_tv": "conv1",
  "resnet50": "conv1",
  "densenet121": "features.conv0",
}
_CLASSIFIER = {
  "vgg11": "classifier.6",
  "vgg16": "classifier.6",
  "vgg16_bn": "classifier.6",
  "resnet18_tv": "fc",
  "resnet50": "fc",
  "densenet121": "classifier",
}
# torchvision's old DenseNet checkpoints name `norm1` as `norm.1` (its own loader renames them the same way).
_LEGACY_DENSENET = re.compile(
  r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|"
  r"running_var))$"
)

StateDict = dict[str, np.ndarray]


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def load_state_dict(source: str | Path | Mapping[str, Any]) -> StateDict:
  """A state dict as numpy arrays, from a `.pth`/`.pt` file, a `.safetensors` file or a mapping."""
  if isinstance(source, Mapping):
    raw = source
  else:
    path = Path(source).expanduser()
    if not path.is_file():
      raise FileNotFoundError(f"no weights file {path}")
    if path.suffix == ".safetensors":
      from safetensors.numpy import load_file

      raw = load_file(str(path))
    else:
      try:
        import torch
      except ImportError as e:
        raise ImportError(
          f"reading {path} needs torch (pip install torch), or convert it to .safetensors on a machine that has torch"
        ) from e
      raw = torch.load(str(path), map_location="cpu", weights_only=True)
      raw = raw.get("state_dict", raw) if isinstance(raw, Mapping) else raw
  out = {}
  for key, value in raw.items():
    key = key.removeprefix("module.")  # saved from nn.DataParallel
    match = _LEGACY_DENSENET.match(key)
    out[match.group(1) + match.group(2) if match else key] = _to_numpy(value)
  return out


def _targets(layer: nnx.Module) -> dict[str, tuple[nnx.Variable, Callable[[np.ndarray], np.ndarray]]]:
  """PyTorch tensor name suffix -> (flax variable, layout change) for one layer."""
  same = lambda a: a
  if isinstance(layer, nnx.Conv):
    out = {"weight": (layer.kernel, lambda a: a.transpose(2, 3, 1, 0))}
    return out | ({"bias": (layer.bias, same)} if layer.bias is not None else {})
  if isinstance(layer, nnx.Linear):
    return {"weight": (layer.kernel, lambda a: a.T), "bias": (layer.bias, same)}
  if isinstance(layer, nnx.BatchNorm):
    return {
      "weight": (layer.scale, same),
      "bias": (layer.bias, same),
      "running_mean": (layer.mean, same),
      "running_var": (layer.var, same),
    }
  raise TypeError(f"no PyTorch mapping for {type(layer).__name__}")


def load_into(model: nnx.Module, state_dict: str | Path | Mapping[str, Any], *, classifier: bool | None = None) -> None:
  """Copies a torchvision state dict into `model` in place.

  Args:
    model: one of the `ARCHS` networks, at the width the state dict was saved at.
    state_dict: a file or a mapping (`load_state_dict`).
    classifier: load the classifier too; None loads it when its shape matches (same number of classes).
  """
  sd = load_state_dict(state_dict)
  names = list(model.torchvision_layers())
  classifier_prefix = names[-1][0]
  problems, used = [], set()
  for prefix, layer in names:
    is_classifier = prefix == classifier_prefix
    for suffix, (var, change) in _targets(layer).items():
      key = f"{prefix}.{suffix}"
      if key not in sd:
        if not (is_classifier and classifier is False):
          problems.append(f"missing {key}")
        continue
      used.add(key)
      if is_classifier and classifier is False:
        continue
      value = change(sd[key])
      if value.shape != var.value.shape:
        if is_classifier and classifier is None:
          continue  # another number of classes: the classifier stays freshly initialised
        problems.append(f"{key}: shape {tuple(sd[key].shape)} does not fit {var.value.shape} (as flax lays it out)")
        continue
      var.value = jnp.asarray(value, var.value.dtype)
  unused = sorted(k for k in sd if k not in used and not k.endswith("num_batches_tracked"))
  problems += [f"unexpected {k}" for k in unused]
  if problems:
    shown = "; ".join(problems[:6]) + (f"; ... ({len(problems)} problems)" if len(problems) > 6 else "")
    raise ValueError(f"state dict does not fit {getattr(model, 'arch', type(model).__name__)}: {shown}")


def infer_width(arch: str, sd: StateDict) -> float:
  """The width multiplier a state dict was saved at, from its first conv (64 channels at width 1)."""
  return float(sd[_FIRST_CONV[arch] + ".weight"].shape[0]) / 64.0


def from_torchvision(
  arch: str,
  state_dict: str | Path | Mapping[str, Any],
  num_classes: int | None = None,
  *,
  width: float | None = None,
  in_channels: int = 3,
  input_adapter: str = "none",
  canvas_size: int = 224,
  seed: int = 0,
  **kwargs: Any,
) -> nnx.Module:
  """The flax network of torchvision architecture `arch` holding the weights of `state_dict`.

  With the defaults (3-channel input, no adapter), `model(x)` for NHWC float32 `x` equals torchvision's
  `model(x.transpose(0, 3, 1, 2))` in eval mode (`model.eval()` here; BatchNorm running statistics loaded).

  Args:
    arch: a key of `ARCHS`.
    state_dict: a `.pth`/`.pt` or `.safetensors` file, or a mapping of PyTorch names to arrays.
    num_classes: None keeps the state dict's classifier; another number re-initialises it (`seed`).
    width: the channel multiplier; None infers it from the first conv.
    in_channels, input_adapter, canvas_size, kwargs: passed to the architecture's factory (e.g.
      `in_channels=1, input_adapter="imagenet"` for grayscale canvases).
  """
  if arch not in ARCHS:
    raise ValueError(f"unknown torchvision architecture {arch!r}; known: {', '.join(ARCHS)}")
  sd = load_state_dict(state_dict)
  width = infer_width(arch, sd) if width is None else float(width)
  classes = num_classes
  if classes is None:
    classes = int(sd[_CLASSIFIER[arch] + ".weight"].shape[0])
  model = ARCHS[arch](
    num_classes=classes,
    canvas_size=canvas_size,
    in_channels=in_channels,
    width=width,
    input_adapter=input_adapter,
    rngs=nnx.Rngs(seed),
    **kwargs,
  )
  load_into(model, sd, classifier=None if num_classes is not None else True)
  model.eval()
  return model


def weights_spec(weights: str | Mapping[str, str] | None, model_name: str) -> str:
  """One model's `pretrain.weights` value: a file path or a published name (`IMAGENET1K_V1`). The setting is
  one value (every model) or a mapping of model names (the keys of `model`) to values."""
  spec = weights.get(model_name) if isinstance(weights, Mapping) else weights
  if not spec:
    raise ConfigError(
      f"the imagenet pretrain regime needs weights for model {model_name!r}: set pretrain.weights="
      f"/path/to/{model_name}.pth or a published name (IMAGENET1K_V1), or a mapping, e.g. "
      f"+pretrain.weights.{model_name}=...; see docs/paper.md"
    )
  return str(spec)


def arch_of(factory: Callable[..., nnx.Module]) -> str:
  """The torchvision architecture a model factory builds (abstractly: no weights are drawn)."""
  model = nnx.eval_shape(lambda: factory(num_classes=2, canvas_size=224, rngs=nnx.Rngs(0)))
  return getattr(model, "arch", "") or type(model).__name__


def check_weights(weights: str | Mapping[str, str] | None, model_name: str, arch: Callable[[], str]) -> None:
  """Fails now, on one line, if a model's weights are neither an existing file nor a published name of its
  architecture (`arch()`, called only for names). Nothing is downloaded."""
  spec = weights_spec(weights, model_name)
  if published_weights.is_name(spec):
    published_weights.filename(arch(), spec)
  else:
    _local(spec, model_name)


def _local(spec: str, model_name: str) -> Path:
  path = Path(spec).expanduser().absolute()
  if not path.is_file():
    raise MissingFileError(f"pretrain.weights for {model_name!r}: no file {path}")
  return path


def weights_for(
  weights: str | Mapping[str, str] | None, model_name: str, arch: str, cache: str | Path
) -> tuple[Path, dict[str, str]]:
  """The local weights file for one model of a run, downloaded into `cache` first when the setting names
  published weights (`published_weights.fetch`: once, verified), and what a row records of its source."""
  spec = weights_spec(weights, model_name)
  if not published_weights.is_name(spec):
    return _local(spec, model_name), {"source": "torchvision state dict"}
  file = published_weights.filename(arch, spec)
  path = published_weights.fetch(file, cache)
  return path, {"source": f"torchvision {spec}", "url": published_weights.url(file)}


def prefetch(weights: str | Mapping[str, str] | None, factories: Mapping[str, Callable], cache: str | Path) -> None:
  """Downloads every model's published weights before any row runs, so no network failure comes after
  hours of other rows."""
  for name, factory in factories.items():
    spec = weights_spec(weights, name)
    if published_weights.is_name(spec):
      published_weights.fetch(published_weights.filename(arch_of(factory), spec), cache)


def load_imagenet(model: nnx.Module, path: Path, source: Mapping[str, str] | None = None) -> dict[str, Any]:
  """Loads everything but the classifier of a torchvision state dict into `model` (the `imagenet` regime)
  and returns what a row records: the file, its sha256, the architecture and `source` (`weights_for`)."""
  if not isinstance(model, TorchvisionNet):
    raise ValueError(
      f"the imagenet pretrain regime needs a torchvision architecture ({', '.join(ARCHS)}), got {type(model).__name__}"
    )
  if model.input_adapter != "imagenet":
    raise ValueError(
      f"ImageNet weights expect ImageNet-normalised 3-channel input: set input_adapter: imagenet "
      f"for {model.arch} (it is {model.input_adapter!r})"
    )
  load_into(model, path, classifier=False)
  source = dict(source or {"source": "torchvision state dict"})
  return {"path": str(path), "sha256": hashing.sha256_file(Path(path).expanduser()), "arch": model.arch, **source}
