"""BatchNorm running statistics re-estimated on given data: what an interpolated model (WiSE-FT) needs.

Interpolating two networks' weights interpolates what each BatchNorm layer sees, but not its running
statistics consistently: the mean of two layers' running means is not the mean of the interpolated
layer's inputs. So, as is done for weight averages (SWA's `update_bn`, model soups, WiSE-FT on BN
networks), the statistics are measured again: the model runs forward on `batches` training batches with
its BatchNorm layers in train mode (everything else in eval mode: no dropout), and each layer's running
mean and variance become the plain average of its per-batch statistics (not an exponential average).
A model without BatchNorm is returned as it is.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from shiftbench import models
from shiftbench.data import canvas
from shiftbench.data.device import DeviceObjects
from shiftbench.training.step import Placement, draw_batch


def batchnorm_layers(model: nnx.Module) -> list[nnx.BatchNorm]:
  return [m for _, m in model.iter_modules() if isinstance(m, nnx.BatchNorm)]


@functools.cache
def _batch_statistics(graphdef: nnx.GraphDef, spec: canvas.CanvasSpec, placement: Placement, batch_size: int):
  """One jitted forward pass on the batch of `key`: every BatchNorm layer's statistics of that batch (its
  momentum is 0 in `graphdef`, so its running statistics become the batch's exactly)."""

  def stats(state, key, images, labels):
    model = nnx.merge(graphdef, state)
    objs, locs, _ = draw_batch(key, images, labels, spec, placement, batch_size)
    models.logits_on_canvas(model, objs, locs, spec.canvas_size)
    return nnx.state(model, nnx.BatchStat)

  return jax.jit(stats)


def reestimate(
  model: nnx.Module,
  data: DeviceObjects,
  spec: canvas.CanvasSpec,
  placement: Placement,
  *,
  batch_size: int,
  seed: jax.Array,
  batches: int,
) -> nnx.Module:
  """A copy of `model` whose BatchNorm running mean and variance are the plain average, over `batches`
  batches, of each layer's batch statistics; the batches are training's own first ones for `seed` (the
  key `loop.train` folds each step into), drawn from `data` at `placement`. `model` itself when it has no
  BatchNorm layer (nothing to re-estimate: the same numbers)."""
  if not batchnorm_layers(model):
    return model
  if batches < 1:
    raise ValueError(f"BatchNorm re-estimation needs batches >= 1, got {batches}")
  graphdef, state = nnx.split(model)
  out = nnx.merge(graphdef, jax.tree.map(jnp.copy, state))
  layers = batchnorm_layers(out)
  momenta = [layer.momentum for layer in layers]
  out.eval()
  for layer in layers:  # momentum 0: each forward pass leaves exactly that batch's statistics
    layer.train()
    layer.momentum = 0.0
  graphdef, state = nnx.split(out)
  program = _batch_statistics(graphdef, spec, placement, batch_size)
  total = None
  for i in range(batches):
    stats = program(state, jax.random.fold_in(seed, i), data.images, data.labels)
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)
  nnx.update(out, jax.tree.map(lambda x: x / batches, total))
  for layer, momentum in zip(layers, momenta):
    layer.momentum = momentum
  out.eval()
  return out


__all__ = ["batchnorm_layers", "reestimate"]
