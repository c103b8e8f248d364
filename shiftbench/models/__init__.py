"""Models: one backbone with swappable downsampling, padding and head; a ResNet with the same parts."""

import jax
from flax import nnx

from shiftbench import canvas

from shiftbench.models.cnn import DOWNSAMPLES, HEADS, ShiftNet
from shiftbench.models.layers import PADDINGS
from shiftbench.models.resnet import ResNet


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


__all__ = ["DOWNSAMPLES", "HEADS", "PADDINGS", "ResNet", "ShiftNet", "logits_on_canvas", "logits_on_grid",
           "param_count"]
