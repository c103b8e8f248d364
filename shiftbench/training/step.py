"""One training step: where its objects go (`Placement`), which layers train in which mode (`set_mode`),
the batch a step's key draws (`draw_batch`) and the step itself as a pure function (`make_step`), which
composes the canvases on the device and updates the trainable params."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from shiftbench import models
from shiftbench.data import canvas
from shiftbench.training import descent


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where training objects go: a regime, its base location and jitter radius (docs/protocol.md)."""

  regime: str
  location: tuple[int, int]
  jitter: int = 0


def set_mode(model: nnx.Module, mode: str) -> None:
  """Train-mode layers (BatchNorm batch statistics) for what trains: all of the model in `full` mode;
  in `head` and `last` modes the frozen backbone (`ShiftModel.backbone`) runs in eval mode, so its BN
  uses and keeps the pretrained running averages; in `surgical` mode the frozen hidden FC layers do."""
  model.train()
  if mode in ("head", "last"):
    model.backbone.eval()
  if mode == models.SURGICAL:
    for layer in model.head.hidden:
      layer.eval()


def draw_batch(
  key: jax.Array, images: jax.Array, labels: jax.Array, spec: canvas.CanvasSpec, placement: Placement, batch_size: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The training batch of a step's `key` (the phase's key with the step folded in): (objects in [0, 1],
  their canvas locations, labels). The one draw, shared by training and BatchNorm re-estimation."""
  k_idx, k_loc = jax.random.split(key)
  idx = jax.random.randint(k_idx, (batch_size,), 0, images.shape[0])
  objs = images[idx].astype(jnp.float32) / 255.0
  locs = canvas.sample_locations(k_loc, batch_size, spec, placement.regime, placement.location, placement.jitter)
  return objs, locs, labels[idx]


def make_step(
  graphdef: nnx.GraphDef,
  tx_update: optax.TransformUpdateFn,
  spec: canvas.CanvasSpec,
  placement: Placement,
  batch_size: int,
) -> Callable:
  """The single training step as a pure function of (params, opt_state, rest, key, images, labels)."""

  def step(params, opt_state, rest, key, images, labels):
    objs, locs, y = draw_batch(key, images, labels, spec, placement, batch_size)

    def loss_fn(p):
      model = nnx.merge(graphdef, p, rest, copy=True)  # fresh Variables: BatchNorm may write its stats
      # model(canvas.place(objs, locs)), with the first block on the objects where the model can
      logits = models.logits_on_canvas(model, objs, locs, spec.canvas_size)
      # Non-param state the forward pass updated (BatchNorm running stats in train mode) goes back into `rest`.
      new_rest = nnx.merge_state(rest, nnx.state(model, nnx.Not(nnx.Param)))
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (logits, new_rest)

    return descent.gradient_step(loss_fn, params, opt_state, tx_update, y)

  return step
