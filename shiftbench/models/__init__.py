"""Models: one backbone with swappable downsampling, padding and head; a ResNet with the same parts; and
torchvision's ImageNet networks (VGG, ResNet-18/50, DenseNet-121) with their weights (`from_torchvision`)."""

import jax
import jax.numpy as jnp
from flax import nnx

from shiftbench.data import canvas
from shiftbench.models.cnn import DOWNSAMPLES, HEADS, ShiftNet
from shiftbench.models.densenet import DenseNet
from shiftbench.models.layers import PADDINGS
from shiftbench.models.resnet import ResNet
from shiftbench.models.resnet_tv import TorchvisionResNet
from shiftbench.models.torchvision_weights import ARCHS as TORCHVISION_ARCHS
from shiftbench.models.torchvision_weights import from_torchvision
from shiftbench.models.vgg import VGG

# Every model has `.backbone` (conv) and `.head` (`cnn.Head`: `hidden` FC layers + `classifier`). What a
# pretrained model passes on to a model for new classes is everything but the classifier (Biscione &
# Bowers 2021 keep the pretrained FC layers and replace only the output layer).
CLASSIFIER_NAME = "classifier"
CLASSIFIER = nnx.PathContains(CLASSIFIER_NAME)
TRANSFERABLE = nnx.Not(CLASSIFIER)


def transfer(source: nnx.Module, target: nnx.Module) -> None:
  """Copies every weight of `source` except its classifier into `target` (same architecture; the
  classifiers may differ in their number of classes). Copies, so training `target` (which donates its
  buffers) never touches `source`."""
  nnx.update(target, jax.tree.map(jnp.copy, nnx.state(source, TRANSFERABLE)))


def param_count(model: nnx.Module) -> int:
  """Number of trainable parameters (every `nnx.Param`) of a model."""
  return int(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))))


def logits_on_canvas(model: nnx.Module, objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
  """`model(canvas.place(objects, locations, canvas_size))`, through the model's blank-canvas shortcut
  (`on_canvas`) when it has one: the one entry point for training and shift metrics."""
  if hasattr(model, "on_canvas"):
    return model.on_canvas(objects, locations, canvas_size)
  return model(canvas.place(objects, locations, canvas_size))


def logits_on_grid(model: nnx.Module, objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
  """Logits of every object (B, h, w, C) at every location (L, 2), as (L, B, classes), through the
  model's `on_grid` shortcut when it has one."""
  if hasattr(model, "on_grid"):
    return model.on_grid(objects, locations, canvas_size)
  return canvas.apply_on_grid(model, objects, locations, canvas_size)


__all__ = [
  "CLASSIFIER",
  "CLASSIFIER_NAME",
  "DOWNSAMPLES",
  "DenseNet",
  "HEADS",
  "PADDINGS",
  "ResNet",
  "ShiftNet",
  "TORCHVISION_ARCHS",
  "TRANSFERABLE",
  "TorchvisionResNet",
  "VGG",
  "from_torchvision",
  "logits_on_canvas",
  "logits_on_grid",
  "param_count",
  "transfer",
]
