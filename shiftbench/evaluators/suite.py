"""Uniform evaluators for every shift metric (big_vision style): `run(predictor, objects, ctx)` yields
`(name, value)` pairs; the `Predictor` (the model in eval mode, made once per model state) is what every
evaluator runs, as big_vision's evaluators run a `predict_fn`.

Which evaluators run, and with which parameters, is the `eval.metrics` config: each key names one
evaluator (instantiated with Hydra's `_target_`) and becomes the prefix of its results, so the same
class can run twice under two keys (e.g. `consistency` and `consistency_circular`). A result called
`name` is stored as `<key>_<name>` (or just `<key>` when the name is empty) in `results.json` rows and
logged to wandb under the same key. Evaluators with `before = True` also run on the model before
fine-tuning, stored as `<key>_before[_<name>]`.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from shiftbench.data import canvas, streams
from shiftbench.data.device import DeviceObjects
from shiftbench.evaluators import consistency, location_maps, metrics, similarity
from shiftbench.evaluators.predictor import Predictor
from shiftbench.infra.errors import ConfigError

Result = Iterator[tuple[str, Any]]
log = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalContext:
  """What every evaluator may read besides the predictor and objects; plain Python, never enters jit.

  `map_everywhere` holds the map's per-object "correct at every grid location" flags when the caller has
  already computed the location map (`location_maps.location_stats`), so the worst case costs nothing extra.
  `key` is the random stream of the evaluator being run (`streams.evaluator_stream(seed, its
  eval.metrics key)`, set by `run_all`), so no two evaluators share random draws.
  """

  spec: canvas.CanvasSpec
  grid: np.ndarray
  location: tuple[int, int]
  batch_size: int = 4096
  seed: int = 0
  map_everywhere: np.ndarray | None = None
  key: jax.Array | None = None

  def everywhere(self, predictor: Predictor, objects: DeviceObjects) -> np.ndarray:
    """Per-object "correct at every grid location" flags: the map's, or computed now (and kept)."""
    if self.map_everywhere is None or self.map_everywhere.shape != (len(objects),):
      self.map_everywhere = location_maps.location_stats(
        predictor, objects.images, objects.labels, self.grid, self.batch_size
      ).everywhere
    return self.map_everywhere


class Evaluator(abc.ABC):
  """One metric. Subclasses read their parameters into Python primitives in `__init__`."""

  before: bool = False

  @abc.abstractmethod
  def run(self, predictor: Predictor, objects: DeviceObjects, ctx: EvalContext) -> Result:
    """Yields `(name, value)`; values are floats or small JSON-able containers.

    Args:
      predictor: the model in eval mode; one for every evaluator of a model state.
      objects: the test objects, in class-balanced order.
      ctx: the canvas, grid, fine-tune location, batch size and this evaluator's random stream.
    """


def _prefix(objects: DeviceObjects, n: int | None) -> DeviceObjects:
  """The first `n` objects. The protocol hands evaluators its test objects in class-balanced order
  (`subsets.balanced_order`), so every prefix is class-balanced whatever the order of the file."""
  if n is None or n >= len(objects):
    return objects
  return DeviceObjects(objects.images[:n], objects.labels[:n], objects.num_classes)


def _key(ctx: EvalContext, salt: int) -> jax.Array:
  """The evaluator's own stream (`ctx.key`), with its configured `seed` folded in."""
  base = ctx.key if ctx.key is not None else streams.evaluator_stream(ctx.seed, "")
  return jax.random.fold_in(base, salt)


class ShiftConsistency(Evaluator):
  """Zhang 2019 consistency for `canvas` or `circular` shifts of at most `d` pixels per axis, from base
  locations anywhere (`around: canvas`) or at the fine-tune location (`around: finetune`: where a model
  fine-tuned at one place is right, so consistency there is not that of near-constant wrong guesses)."""

  AROUND = ("canvas", "finetune")

  def __init__(
    self, d: int = 4, shift: str = "canvas", num_objects: int | None = 256, seed: int = 0, around: str = "canvas"
  ):
    if shift not in consistency.SHIFTS:
      raise ValueError(f"unknown shift {shift!r}; allowed: {', '.join(consistency.SHIFTS)}")
    if around not in self.AROUND:
      raise ConfigError(f"ShiftConsistency around must be one of {', '.join(self.AROUND)}, got {around!r}")
    self.around = around
    if int(d) < 0:
      raise ConfigError(f"ShiftConsistency d must be >= 0 pixels, got {d}")
    self.d, self.shift, self.seed = int(d), shift, int(seed)
    self.num_objects = None if num_objects is None else int(num_objects)

  def run(self, predictor, objects, ctx) -> Result:
    if self.d < 1 or (self.shift == "canvas" and ctx.spec.max_offset == 0):
      yield "", None  # no shift is possible: 1.0 by construction, which measures nothing
      return
    objs = _prefix(objects, self.num_objects)
    yield (
      "",
      consistency.shift_consistency(
        predictor,
        objs.images,
        _key(ctx, self.seed),
        ctx.spec,
        self.d,
        self.shift,
        ctx.batch_size,
        around=ctx.location if self.around == "finetune" else None,
      ),
    )


class WorstCase(Evaluator):
  """Accuracy of objects correct at every grid location (`k=None`, read off the map's flags) or at k
  random grid locations per object (`metrics.worst_of_k_accuracy`'s draw; k x N extra forward passes)."""

  def __init__(self, k: int | None = None, seed: int = 1):
    if k is not None and int(k) < 1:  # the worst of no locations would be 1.0 by construction
      raise ConfigError(f"WorstCase k must be >= 1 or null (every grid location), got {k}")
    self.k, self.seed = (None if k is None else int(k)), int(seed)

  def run(self, predictor, objects, ctx) -> Result:
    if self.k is None:
      yield "acc", float(np.mean(ctx.everywhere(predictor, objects)))
      return
    n = len(objects)
    # metrics.worst_of_k_accuracy's draw, so the number is the one it reads off an (L, N) map
    picks = np.asarray(jax.random.randint(_key(ctx, self.seed), (self.k, n), 0, len(ctx.grid)))
    preds = location_maps.predict_at(
      predictor, jnp.tile(objects.images, (self.k, 1, 1, 1)), ctx.grid[picks.reshape(-1)], ctx.batch_size
    )
    yield "acc", float(np.mean(np.all(preds.reshape(self.k, n) == np.asarray(objects.labels)[None], axis=0)))


def sweep_paths(spec: canvas.CanvasSpec, through: tuple[int, int], length: int | None) -> dict[str, np.ndarray]:
  """Horizontal and vertical 1-pixel paths through `through`, `length` steps long (None = the whole
  axis), clipped to the canvas: {"horizontal": (S, 2), "vertical": (S, 2)} int32 locations."""
  y, x = spec.check_location(through)
  n = spec.max_offset + 1 if length is None else min(int(length) + 1, spec.max_offset + 1)

  def span(c: int) -> np.ndarray:
    start = min(max(0, c - n // 2), spec.max_offset + 1 - n)
    return np.arange(start, start + n)

  xs, ys = span(x), span(y)
  return {
    "horizontal": np.stack([np.full_like(xs, y), xs], 1).astype(np.int32),
    "vertical": np.stack([ys, np.full_like(ys, x)], 1).astype(np.int32),
  }


class FlipRate(Evaluator):
  """Fraction of 1-pixel steps that change the prediction, along sweeps through the fine-tune location."""

  def __init__(self, length: int | None = None, num_objects: int | None = 100):
    self.length = None if length is None else int(length)
    self.num_objects = None if num_objects is None else int(num_objects)

  def run(self, predictor, objects, ctx) -> Result:
    objs = _prefix(objects, self.num_objects)
    paths = sweep_paths(ctx.spec, ctx.location, self.length)
    locs = np.concatenate(list(paths.values()))
    # Equal location chunks (predict_grid pads the last one): ceil(L / n) locations x all objects each.
    n_chunks = -(-len(locs) * len(objs) // ctx.batch_size)
    batch = max(len(objs), -(-len(locs) // n_chunks) * len(objs))
    preds = location_maps.predict_grid(predictor, objs.images, locs, batch)
    flips, start = {}, 0
    for name, path in paths.items():
      flips[name] = np.asarray(metrics.path_flips(preds[start : start + len(path)]))
      start += len(path)
    yield "", float(np.mean(np.concatenate(list(flips.values()))))
    for name, f in flips.items():
      yield name, float(np.mean(f))


class Similarity(Evaluator):
  """Biscione & Bowers per-layer similarity to the fine-tune location, mean over G_off.

  Yields the penultimate layer's summary (`""`) and every layer's (`layers`, a dict by layer name).
  """

  def __init__(self, num_objects: int | None = 64, before: bool = True):
    self.num_objects = None if num_objects is None else int(num_objects)
    self.before = bool(before)

  def run(self, predictor, objects, ctx) -> Result:
    objs = _prefix(objects, self.num_objects)
    present = len(np.unique(np.asarray(objs.labels)))
    if present < 2:  # no different-class pairs: cos_diff, and so the normalised similarity, is undefined
      log.warning(
        "similarity: %d test object(s) of %d class(es); it needs two classes or more, so it is undefined for this row",
        len(objs),
        present,
      )
      yield "", None
      yield "layers", None
      return
    sims = similarity.similarity_map(
      predictor, objs.images, objs.labels, ctx.grid, ctx.location, ctx.batch_size, objects.num_classes
    )
    off = np.asarray(metrics.off_location_mask(ctx.grid, ctx.location, 0))  # G_off: every grid location but p_ft
    names = predictor.layer_names(int(objects.images.shape[-1]))
    per_layer = {n: float(np.nanmean(s[off])) if off.any() else float("nan") for n, s in zip(names, sims)}
    yield "", per_layer[names[-2]]  # the penultimate layer: the classifier's input
    yield "layers", per_layer


def result_key(prefix: str, name: str) -> str:
  return f"{prefix}_{name}" if name else prefix


def run_all(
  evaluators: Mapping[str, Evaluator],
  predictor: Predictor,
  objects: DeviceObjects,
  ctx: EvalContext,
  before: bool = False,
) -> dict[str, Any]:
  """Runs every evaluator (only those with `before` set when `before`) into one flat result dict.

  Args:
    evaluators: the evaluators by result prefix (`Settings.evaluators`).
    predictor: the model state to evaluate, in eval mode; every evaluator gets this one.
    objects: the test objects, in class-balanced order.
    ctx: the evaluation context; its `key` is set to each evaluator's stream in turn.
    before: run only the evaluators with `before` set, under `<prefix>_before` keys.

  Returns:
    {result key: value}.
  """
  out = {}
  for prefix, evaluator in evaluators.items():
    if before and not evaluator.before:
      continue
    key = f"{prefix}_before" if before else prefix
    ctx.key = streams.evaluator_stream(ctx.seed, prefix)  # the same draws before and after fine-tuning
    for name, value in evaluator.run(predictor, objects, ctx):
      out[result_key(key, name)] = value
  return out
