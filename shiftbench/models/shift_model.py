"""The model protocol: what the protocol, training and evaluation read off a model, said once.

Every model (`ShiftNet`, `ResNet`, the torchvision networks) meets `ShiftModel`:
  backbone       the feature extractor (`FeatureExtractor`): convolutions, `features(x)` per block;
  head           what sits on it (`Head`): `hidden` fully connected layers, then the `classifier`;
  input_adapter  the kind of its input adapter (`input_adapter.KINDS`), None for a model without one;
  on_canvas, on_grid  logits of objects on blank canvases (a model's faster path, or whole canvases).
`Network` is the base that gives a backbone + head these defaults (no adapter, whole canvases).

What each fine-tune mode trains, and what a pretrained model passes on to one for new classes, follow
from these parts alone, by where they sit in the model (`model.head`, `model.head.classifier`):
  full  every parameter;
  head  the head's (hidden FC layers + classifier), the backbone frozen and in eval mode;
  last  the classifier's only.
Everything but the classifier transfers (`TRANSFERABLE`): Biscione & Bowers 2021 keep the pretrained FC
layers and replace only the output layer. So a new architecture needs only these attributes; a variant of
an existing one only a preset in `conf/model/` (docs/development.md, "Add a model").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import jax
from flax import nnx

from shiftbench.data import canvas
from shiftbench.rows import schema

# Where the parts sit: `model.head` and `model.head.classifier` (attribute names, so also state paths).
HEAD_NAME = "head"
CLASSIFIER_NAME = "classifier"


@runtime_checkable
class FeatureExtractor(Protocol):
  """The backbone: canvases (B, H, W, C) to a feature map, and every block's output."""

  def __call__(self, x: jax.Array) -> jax.Array: ...

  def features(self, x: jax.Array) -> list[jax.Array]: ...


@runtime_checkable
class Head(Protocol):
  """The head: `hidden` FC layers (they transfer, and train in `head` mode) and the `classifier` (new for
  B's classes, the only part `last` trains)."""

  hidden: Sequence[nnx.Module]
  classifier: nnx.Module

  def __call__(self, x: jax.Array) -> jax.Array: ...

  def hidden_features(self, x: jax.Array) -> list[jax.Array]:
    """Every hidden layer's output (empty without hidden layers)."""
    ...

  def pre_logits(self, x: jax.Array) -> jax.Array:
    """The classifier's input (the penultimate representation)."""
    ...


@runtime_checkable
class ShiftModel(Protocol):
  """A model the protocol can pretrain, fine-tune at every mode and evaluate (see the module docstring)."""

  backbone: FeatureExtractor
  head: Head

  @property
  def input_adapter(self) -> str | None: ...

  def __call__(self, x: jax.Array) -> jax.Array: ...

  def on_canvas(self, objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
    """`self(canvas.place(objects, locations, canvas_size))`: (B, classes)."""
    ...

  def on_grid(self, objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
    """Logits of every object at every location: (L, B, classes)."""
    ...


class Network(nnx.Module):
  """`ShiftModel`'s defaults for a model with `self.backbone` and `self.head`: no input adapter, and whole
  canvases for `on_canvas` / `on_grid` (a model with a blank-canvas shortcut overrides them)."""

  @property
  def input_adapter(self) -> str | None:
    return None

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.head(self.backbone(x))

  def on_canvas(self, objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
    return self(canvas.place(objects, locations, canvas_size))

  def on_grid(self, objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
    return canvas.apply_on_grid(self, objects, locations, canvas_size)


@dataclasses.dataclass(frozen=True)
class Under:
  """An nnx filter: the variables under the part at `prefix` (a path of attribute names from the model)."""

  prefix: tuple[str, ...]

  def __call__(self, path: tuple[Any, ...], value: Any) -> bool:
    return tuple(path[: len(self.prefix)]) == self.prefix


HEAD = Under((HEAD_NAME,))
CLASSIFIER = Under((HEAD_NAME, CLASSIFIER_NAME))
HIDDEN = Under((HEAD_NAME, "hidden"))  # the head's hidden FC layers (`Head.hidden`)
TRANSFERABLE = nnx.Not(CLASSIFIER)
# A training mode no row is labelled with: the mirror of `head`, for surgical fine-tuning (Lee et al. 2023).
SURGICAL = "surgical"


def trainable(mode: str) -> Any:
  """Which params train at a fine-tune mode: all of them (`full`), the head's (`head`: hidden FC layers +
  classifier, the backbone frozen) or the classifier's only (`last`); and at `surgical`, everything but
  the hidden FC layers (the backbone and the classifier: `head`'s mirror)."""
  if mode == "full":
    return nnx.Param
  if mode == "head":
    return nnx.All(nnx.Param, HEAD)
  if mode == "last":
    return nnx.All(nnx.Param, CLASSIFIER)
  if mode == SURGICAL:
    return nnx.All(nnx.Param, nnx.Not(HIDDEN))
  raise ValueError(f"unknown fine-tune mode {mode!r}; allowed: {', '.join((*schema.FINETUNE_MODES, SURGICAL))}")


def mismatches(model: Any, num_classes: int, canvas_size: int, in_channels: int) -> list[str]:
  """What keeps `model` (built for `num_classes`) from meeting `ShiftModel`, in words (empty: it meets it).

  Checked on abstract shapes (nothing computed): the parts and methods the protocol reads, that the
  classifier sits at `model.head.classifier` and holds parameters (else `last` would train nothing), and
  that a (1, canvas_size, canvas_size, in_channels) canvas gives (1, num_classes) logits and a list of block
  outputs. A user's model gets this once, before it trains (`runs.protocol.Protocol.build`).
  """
  missing = [n for n in ("backbone", "head", "input_adapter", "on_canvas", "on_grid") if not hasattr(model, n)]
  if hasattr(model, "backbone"):
    missing += [f"backbone.{n}" for n in ("features",) if not hasattr(model.backbone, n)]
  if hasattr(model, "head"):
    names = ("hidden", "classifier", "hidden_features", "pre_logits")
    missing += [f"head.{n}" for n in names if not hasattr(model.head, n)]
  if missing:
    return [f"it has no {', '.join(missing)}"]
  if not callable(model) or not callable(model.backbone) or not callable(model.head):
    return ["the model, its backbone and its head must each be callable"]
  problems = []
  if not jax.tree.leaves(nnx.state(model, nnx.All(nnx.Param, CLASSIFIER))):
    problems.append("head.classifier holds no nnx.Param (the `last` mode trains only it)")
  x = jax.ShapeDtypeStruct((1, canvas_size, canvas_size, in_channels), jax.numpy.float32)
  try:
    logits = nnx.eval_shape(lambda m, x: m(x), model, x)
    blocks = nnx.eval_shape(lambda m, x: m.backbone.features(x), model, x)
  except Exception as e:  # the model's own error on a canvas, in one line
    return problems + [f"a {tuple(x.shape)} canvas fails in it ({type(e).__name__}: {' '.join(str(e).split())[:300]})"]
  if getattr(logits, "shape", None) != (1, num_classes):
    problems.append(
      f"a {tuple(x.shape)} canvas gives logits of shape {getattr(logits, 'shape', type(logits))}, "
      f"not (1, {num_classes})"
    )
  if not isinstance(blocks, (list, tuple)) or not blocks:
    problems.append("backbone.features(x) must return a non-empty list of block outputs")
  return problems
