"""One model as every evaluation path runs it: a `Predictor`, made once per model state and handed down.

Location maps, point predictions, shift pairs, similarity and every `Evaluator` take a `Predictor`
instead of the model (as big_vision's evaluators take a `predict_fn`). It puts the model in eval mode once
(BatchNorm uses its running averages, so a prediction does not depend on the rest of the batch) and splits
it once into graphdef and state. Inside a jitted program the model is a `Forward`: the one place that
merges the state, turns uint8 objects into [0, 1] floats and computes logits (on a grid of locations, at
one location per object, on whole canvases) or every layer's features.

`Predictor.jit(program)` compiles `program(forward, *args)` once per (model structure, canvas size,
program, static settings): a new state of the same model (the next row, the next evaluation step) and new
locations of the same shape reuse the compiled program instead of retracing it.

Layer features, read through the model protocol (`models.ShiftModel`: `backbone` and `head`):
  - `model.backbone.features(x)` returns a list of every block's output (conv layers);
  - `model.head.hidden_features(f)` returns every hidden FC layer's output (`fc0`, `fc1`, ...); a head
    without hidden layers has `model.head.pre_logits(f)`, the classifier's input, as its one layer
    (`pre_logits`);
  - the logits (`model.head(f)`) are the last layer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from shiftbench import models
from shiftbench.data import canvas


def _head_features(head: models.Head, last: jax.Array) -> list[jax.Array]:
  return head.hidden_features(last) or [head.pre_logits(last)]


def layer_features(model: nnx.Module, x: jax.Array) -> list[jax.Array]:
  """Every conv block's output, every hidden FC layer's (or the classifier's input) and the logits, each
  flattened to (B, D).

  Args:
    model: a `models.ShiftModel` (its `backbone` and `head`).
    x: (B, H, W, C) float canvases.

  Returns:
    One (B, D) float32 array per layer, in `layer_names` order.
  """
  feats = list(model.backbone.features(x))
  last = feats[-1]
  layers = [*feats, *_head_features(model.head, last), model.head(last)]
  return [f.reshape(f.shape[0], -1).astype(jnp.float32) for f in layers]


def layer_names(model: nnx.Module, canvas_size: int, in_channels: int) -> list[str]:
  """`block0..`, then `fc0..` (hidden FC layers) or `pre_logits` (a head without them), then `logits`, in
  `layer_features` order; the second to last is the penultimate layer.

  Args:
    model: a `models.ShiftModel` (its `backbone` and `head`).
    canvas_size: side of the square canvas.
    in_channels: channels of a canvas.

  Returns:
    One name per layer of `layer_features`.
  """
  probe = jnp.zeros((1, canvas_size, canvas_size, in_channels), jnp.float32)
  n_blocks = len(jax.eval_shape(lambda x: model.backbone.features(x), probe))
  n_hidden = len(model.head.hidden)
  head = [f"fc{i}" for i in range(n_hidden)] if n_hidden else ["pre_logits"]
  return [f"block{i}" for i in range(n_blocks)] + head + ["logits"]


class Forward:
  """The model inside a jitted program: what a `Predictor.jit` program receives as its first argument.

  Objects are uint8 (N, h, w, C); every method that takes them scales them to [0, 1] floats (`pixels`)
  before anything else, so every path sees the same canvases.
  """

  def __init__(self, model: nnx.Module, canvas_size: int):
    self.model, self.canvas_size = model, canvas_size

  def pixels(self, objects: jax.Array) -> jax.Array:
    """uint8 objects (or canvases) as float32 in [0, 1]."""
    return objects.astype(jnp.float32) / 255.0

  def place(self, objects: jax.Array, locations: jax.Array) -> jax.Array:
    """(N, H, W, C) float canvases, object i at `locations[i]` ((N, 2) top-left corners)."""
    return canvas.place(self.pixels(objects), locations, self.canvas_size)

  def place_grid(self, objects: jax.Array, locations: jax.Array) -> jax.Array:
    """(L, N, H, W, C) float canvases, every object at every one of the (L, 2) locations."""
    return canvas.place_grid(self.pixels(objects), locations, self.canvas_size)

  def logits(self, canvases: jax.Array) -> jax.Array:
    """(B, classes) logits of whole (B, H, W, C) float canvases."""
    return self.model(canvases)

  def on_canvas(self, objects: jax.Array, locations: jax.Array) -> jax.Array:
    """(N, classes) logits of object i at `locations[i]`, through the model's blank-canvas shortcut."""
    return models.logits_on_canvas(self.model, self.pixels(objects), locations, self.canvas_size)

  def on_grid(self, objects: jax.Array, locations: jax.Array) -> jax.Array:
    """(L, N, classes) logits of every object at every one of the (L, 2) locations."""
    return models.logits_on_grid(self.model, self.pixels(objects), locations, self.canvas_size)

  def features(self, canvases: jax.Array) -> list[jax.Array]:
    """`layer_features` of (B, H, W, C) float canvases: one (B, D) array per layer."""
    return layer_features(self.model, canvases)


@functools.cache
def _compiled(
  graphdef: nnx.GraphDef, canvas_size: int, program: Callable[..., Any], static: tuple[tuple[str, Hashable], ...]
) -> Callable[..., Any]:
  """`program(Forward, *args, **static)` of a state, jitted; cached so equal keys share one compiled program."""

  def run(state: nnx.State, *args: Any) -> Any:
    return program(Forward(nnx.merge(graphdef, state), canvas_size), *args, **dict(static))

  run.__name__ = run.__qualname__ = program.__name__  # profiles and compile logs name the program
  return jax.jit(run)


class Predictor:
  """One model state in eval mode, split once, for every evaluation path of that state.

  Make one per model state evaluated (after fine-tuning, at each evaluation step): it holds the state's
  arrays, and training donates its buffers, so a Predictor made before a training step must not be used
  after it.

  Attributes:
    graphdef: the model's structure (in eval mode).
    state: the model's weights and statistics.
    canvas_size: side of the square canvas every prediction is made on.
  """

  def __init__(self, model: nnx.Module, canvas_size: int):
    """Puts `model` in eval mode (`model.eval()`, in place) and splits it.

    Args:
      model: the network (a `models.ShiftModel` for layer features; any canvases-to-logits network otherwise).
      canvas_size: side of the square canvas.
    """
    model.eval()
    self.graphdef, self.state = nnx.split(model)
    self.canvas_size = int(canvas_size)

  def jit(self, program: Callable[..., Any], **static: Hashable) -> Callable[..., Any]:
    """`program(forward, *args, **static)` compiled for this model and bound to this state.

    Args:
      program: a module-level function (its identity is part of the cache key, so a fresh lambda per call
        would compile again) whose first argument is the model as a `Forward`.
      **static: hashable settings the program is specialised on (a shift kind, a class count).

    Returns:
      A function of `*args` (arrays) running the compiled program on this predictor's state; the program
      is shared by every Predictor of the same model structure and canvas size.
    """
    fn = _compiled(self.graphdef, self.canvas_size, program, tuple(sorted(static.items())))
    return functools.partial(fn, self.state)

  def layer_names(self, in_channels: int) -> list[str]:
    """`layer_names` of this model: one name per layer of `Forward.features`."""
    return layer_names(nnx.merge(self.graphdef, self.state), self.canvas_size, in_channels)
