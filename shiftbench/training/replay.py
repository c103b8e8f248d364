"""Replay of the pretraining data during fine-tuning: part of every batch drawn from A, scored by A's classifier.

The model trains with `PairedClassifier` in place of its classifier: B's classifier and A's pretrained one
side by side on the same penultimate features. It answers with B's logits alone (evaluation, curves,
predictions), and with B's and A's logits concatenated inside the replay step (`both`), so a mixed batch
runs through every model's own forward path (blank-canvas shortcuts included) once, BatchNorm statistics
over the whole mixed batch. Each sample's loss is cross-entropy against its own task's classes; the batch
loss is their mean over the whole batch, so A's samples weigh their fraction of it.

The B part of each batch is the first `batch - count` objects and locations of plain fine-tuning's own
draw (the same key, the same shapes), and A's part comes from its own key (`fold_in` of the step's key),
so replay changes which objects are in a batch and nothing else about B's stream.
"""

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

# The id folded into a step's key for its A draws: plain fine-tuning splits the same key, never folds it.
A_DRAWS = 7


@dataclasses.dataclass(frozen=True)
class Replay:
  """What a fine-tune batch replays: `fraction` of it (rounded to whole objects) drawn from A's objects
  at `placement` (`loop.Placement`: the pretraining regime, location and jitter). Static, so it keys the
  compiled program; A's objects travel as the program's arguments."""

  fraction: float
  placement: object  # loop.Placement (not imported: loop imports this module)

  def __post_init__(self):
    if not 0.0 < self.fraction < 1.0:
      raise ValueError(f"replay fraction must lie in (0, 1), got {self.fraction}")

  def count(self, batch_size: int) -> int:
    """How many of a batch's objects come from A; at least one B object is always left."""
    count = round(self.fraction * batch_size)
    if not 0 < count < batch_size:
      raise ValueError(
        f"replay fraction {self.fraction} of a batch of {batch_size} is {count} objects from A; "
        f"it must leave 1 to {batch_size - 1}"
      )
    return count


class PairedClassifier(nnx.Module):
  """B's classifier (`b`) and A's (`a`) on the same features: B's logits, or with `both` set (the replay
  step sets it on its own copy of the model) B's then A's, concatenated on the last axis."""

  def __init__(self, b: nnx.Module, a: nnx.Module):
    self.b, self.a = b, a
    self.both = False

  def __call__(self, x: jax.Array) -> jax.Array:
    if not self.both:
      return self.b(x)
    return jnp.concatenate([self.b(x), self.a(x)], axis=-1)


def attach(model: nnx.Module, a_classifier: nnx.Module) -> PairedClassifier:
  """Puts A's classifier beside `model`'s (in place); `detach` undoes it."""
  pair = PairedClassifier(model.head.classifier, a_classifier)
  model.head.classifier = pair
  return pair


def detach(model: nnx.Module) -> nnx.Module:
  """`model` with B's classifier alone again (in place), A's classifier dropped; returns the model."""
  pair = model.head.classifier
  if not isinstance(pair, PairedClassifier):
    raise TypeError(f"the model's classifier is {type(pair).__name__}, not a PairedClassifier")
  model.head.classifier = pair.b
  return model


def make_step(
  graphdef: nnx.GraphDef,
  tx_update: optax.TransformUpdateFn,
  spec: canvas.CanvasSpec,
  placement,
  batch_size: int,
  replay: Replay,
  num_classes: int,
) -> Callable:
  """The replay training step: (params, opt_state, rest, key, images, labels, a_images, a_labels); the
  accuracy it reports (and the stopping rule reads) is on the batch's B objects only."""
  count = replay.count(batch_size)
  own = batch_size - count
  a_at = replay.placement

  def step(params, opt_state, rest, key, images, labels, a_images, a_labels):
    k_idx, k_loc = jax.random.split(key)  # plain fine-tuning's draw, of which B keeps the first `own`
    idx = jax.random.randint(k_idx, (batch_size,), 0, images.shape[0])[:own]
    locs = canvas.sample_locations(k_loc, batch_size, spec, placement.regime, placement.location, placement.jitter)
    ka_idx, ka_loc = jax.random.split(jax.random.fold_in(key, A_DRAWS))
    a_idx = jax.random.randint(ka_idx, (count,), 0, a_images.shape[0])
    a_locs = canvas.sample_locations(ka_loc, count, spec, a_at.regime, a_at.location, a_at.jitter)
    objs = jnp.concatenate([images[idx], a_images[a_idx]]).astype(jnp.float32) / 255.0
    where = jnp.concatenate([jnp.asarray(locs[:own]), jnp.asarray(a_locs)])
    y, y_a = labels[idx], a_labels[a_idx]

    def loss_fn(p):
      model = nnx.merge(graphdef, p, rest, copy=True)
      model.head.classifier.both = True  # this copy only: the model outside answers with B's logits
      logits = models.logits_on_canvas(model, objs, where, spec.canvas_size)
      new_rest = nnx.merge_state(rest, nnx.state(model, nnx.Not(nnx.Param)))
      ce = optax.softmax_cross_entropy_with_integer_labels
      b_loss = ce(logits[:own, :num_classes], y)
      a_loss = ce(logits[own:, num_classes:], y_a)
      return (b_loss.sum() + a_loss.sum()) / batch_size, (logits[:own, :num_classes], new_rest)

    return descent.gradient_step(loss_fn, params, opt_state, tx_update, y)

  return step
