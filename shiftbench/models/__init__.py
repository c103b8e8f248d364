"""Models: one backbone with swappable downsampling, padding and head; a ResNet with the same parts; and
torchvision's ImageNet networks (VGG, ResNet-18/50, DenseNet-121) with their weights (`from_torchvision`).
Every one meets `ShiftModel` (`protocol.py`): what the rest of the package reads off a model."""

import jax
import jax.numpy as jnp
from flax import nnx

from shiftbench.data import canvas
from shiftbench.models.cnn import DOWNSAMPLES, HEADS, ShiftNet
from shiftbench.models.densenet import DenseNet
from shiftbench.models.layers import PADDINGS, conv_general_dilated
from shiftbench.models.resnet import ResNet
from shiftbench.models.resnet_tv import TorchvisionResNet
from shiftbench.models.shift_model import (
  CLASSIFIER,
  CLASSIFIER_NAME,
  HEAD,
  HIDDEN,
  SURGICAL,
  TRANSFERABLE,
  FeatureExtractor,
  Head,
  Network,
  ShiftModel,
  trainable,
)
from shiftbench.models.torchvision_weights import ARCHS as TORCHVISION_ARCHS
from shiftbench.models.torchvision_weights import from_torchvision
from shiftbench.models.vgg import VGG


def transfer(source: nnx.Module, target: nnx.Module) -> None:
  """Copies every weight of `source` except its classifier into `target` (same architecture; the
  classifiers may differ in their number of classes). Copies, so training `target` (which donates its
  buffers) never touches `source`."""
  nnx.update(target, jax.tree.map(jnp.copy, nnx.state(source, TRANSFERABLE)))


def param_count(model: nnx.Module) -> int:
  """Number of trainable parameters (every `nnx.Param`) of a model."""
  return int(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))))


def logits_on_canvas(model: nnx.Module, objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
  """`model(canvas.place(objects, locations, canvas_size))`, through a `ShiftModel`'s `on_canvas` (its
  blank-canvas shortcut, where it has one): the one entry point for training and shift metrics. Any other
  network (a known-answer model of the tests: canvases in, logits out) sees whole canvases."""
  if isinstance(model, ShiftModel):
    return model.on_canvas(objects, locations, canvas_size)
  return model(canvas.place(objects, locations, canvas_size))


def logits_on_grid(model: nnx.Module, objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
  """Logits of every object (B, h, w, C) at every location (L, 2), as (L, B, classes), through a
  `ShiftModel`'s `on_grid` (whole canvases for any other network)."""
  if isinstance(model, ShiftModel):
    return model.on_grid(objects, locations, canvas_size)
  return canvas.apply_on_grid(model, objects, locations, canvas_size)


__all__ = [
  "CLASSIFIER",
  "CLASSIFIER_NAME",
  "DOWNSAMPLES",
  "DenseNet",
  "FeatureExtractor",
  "HEAD",
  "HEADS",
  "HIDDEN",
  "Head",
  "Network",
  "PADDINGS",
  "ResNet",
  "SURGICAL",
  "ShiftModel",
  "ShiftNet",
  "TORCHVISION_ARCHS",
  "TRANSFERABLE",
  "TorchvisionResNet",
  "VGG",
  "conv_general_dilated",
  "from_torchvision",
  "logits_on_canvas",
  "logits_on_grid",
  "param_count",
  "trainable",
  "transfer",
]
