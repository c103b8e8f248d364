"""Models: one backbone with swappable downsampling, padding and head; a ResNet with the same parts."""

import jax
from flax import nnx

from shiftbench.models.cnn import DOWNSAMPLES, HEADS, ShiftNet
from shiftbench.models.layers import PADDINGS
from shiftbench.models.resnet import ResNet


def param_count(model: nnx.Module) -> int:
  """Number of trainable parameters (every `nnx.Param`) of a model."""
  return int(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))))


__all__ = ["DOWNSAMPLES", "HEADS", "PADDINGS", "ResNet", "ShiftNet", "param_count"]
