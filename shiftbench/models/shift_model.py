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
TRANSFERABLE = nnx.Not(CLASSIFIER)


def trainable(mode: str) -> Any:
  """Which params train at a fine-tune mode: all of them (`full`), the head's (`head`: hidden FC layers +
  classifier, the backbone frozen) or the classifier's only (`last`)."""
  if mode == "full":
    return nnx.Param
  if mode == "head":
    return nnx.All(nnx.Param, HEAD)
  if mode == "last":
    return nnx.All(nnx.Param, CLASSIFIER)
  raise ValueError(f"unknown fine-tune mode {mode!r}; allowed: {', '.join(schema.FINETUNE_MODES)}")
