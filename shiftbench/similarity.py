"""Representation similarity across locations (Biscione & Bowers, JMLR 2021), per layer.

For a layer with activations f, an object i at the fine-tune location p_ft and the same object at p:
  cos_same(p) = mean_i cos(f(x_i @ p_ft), f(x_i @ p))
  cos_diff(p) = mean over pairs (i, j) with label_i != label_j of cos(f(x_i @ p), f(x_j @ p))
  similarity(p) = (cos_same(p) - cos_diff(p)) / (1 - cos_diff(p))
1 = the layer represents the object identically wherever it is; 0 = no more alike than two different
classes at the same place. The summary is the mean over G_off (as for off-location accuracy).

Feature hook (any architecture with the `.backbone` / `.head` structure works):
  - `model.backbone.features(x)` returns a list of every block's output (conv layers);
  - `model.head.hidden_features(f)` returns every hidden FC layer's output (`fc0`, `fc1`, ...); a head
    without hidden layers has `model.head.pre_logits(f)`, the classifier's input, as its one layer
    (`pre_logits`); a head with neither method contributes the last block's output, flattened;
  - the logits (`model.head(f)`) are the last layer.
The summary (`Similarity`) is the penultimate layer's: the classifier's input.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shiftbench import canvas, evaluation

_EPS = 1e-8


def _head_features(head: nnx.Module, last: jax.Array) -> list[jax.Array]:
  hidden = head.hidden_features(last) if hasattr(head, "hidden_features") else []
  if hidden:
    return hidden
  return [head.pre_logits(last) if hasattr(head, "pre_logits") else last]


def layer_features(model: nnx.Module, x: jax.Array) -> list[jax.Array]:
  """Every conv block's output, every hidden FC layer's (or the classifier's input) and the logits, each
  flattened to (B, D)."""
  feats = list(model.backbone.features(x))
  last = feats[-1]
  layers = [*feats, *_head_features(model.head, last), model.head(last)]
  return [f.reshape(f.shape[0], -1).astype(jnp.float32) for f in layers]


def layer_names(model: nnx.Module, canvas_size: int, in_channels: int) -> list[str]:
  """`block0..`, then `fc0..` (hidden FC layers) or `pre_logits` (a head without them), then `logits`, in
  `layer_features` order; the second to last is the penultimate layer."""
  probe = jnp.zeros((1, canvas_size, canvas_size, in_channels), jnp.float32)
  n_blocks = len(jax.eval_shape(lambda x: model.backbone.features(x), probe))
  n_hidden = len(getattr(model.head, "hidden", ()))
  head = [f"fc{i}" for i in range(n_hidden)] if n_hidden else ["pre_logits"]
  return [f"block{i}" for i in range(n_blocks)] + head + ["logits"]


def unit_rows(f: jax.Array) -> jax.Array:
  """Rows scaled to unit length; an all-zero row (a silent layer) stays zero, so its cosine is 0."""
  return f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), _EPS)


def cos_same(ref: jax.Array, feats: jax.Array) -> jax.Array:
  """Mean cosine between each object's reference features (N, D) and its features (..., N, D)."""
  return jnp.mean(jnp.sum(unit_rows(ref) * unit_rows(feats), axis=-1), axis=-1)


def cos_diff(feats: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """Mean cosine over ordered pairs of different-class objects at the same location: (..., N, D) -> (...).

  Computed from class sums, without the N x N Gram matrix (so thousands of objects fit): with unit rows
  u_i, total s = sum_i u_i and class sums s_c, sum over different-class pairs of u_i.u_j is
  |s|^2 - sum_c |s_c|^2, and there are N^2 - sum_c n_c^2 such pairs.
  """
  u = unit_rows(feats)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=u.dtype)  # (N, K)
  class_sums = jnp.einsum("nk,...nd->...kd", onehot, u)
  total = jnp.sum(u, axis=-2)
  pair_sum = jnp.sum(total * total, axis=-1) - jnp.sum(class_sums * class_sums, axis=(-2, -1))
  counts = jnp.sum(onehot, axis=0)
  n_pairs = labels.shape[0] ** 2 - jnp.sum(counts * counts)
  # No different-class pair (one class present): undefined, never 0 (which would make the normalised
  # similarity equal raw cos_same).
  return jnp.where(n_pairs > 0, pair_sum / jnp.maximum(n_pairs, 1.0), jnp.nan)


def normalised_similarity(same: jax.Array, diff: jax.Array) -> jax.Array:
  """(cos_same - cos_diff) / (1 - cos_diff); NaN where cos_diff is 1 (classes indistinguishable)."""
  denom = 1.0 - diff
  return jnp.where(denom > _EPS, (same - diff) / jnp.where(denom > _EPS, denom, 1.0), jnp.nan)


@functools.cache
def _features_fn(graphdef: nnx.GraphDef, canvas_size: int):
  """(state, objects (N,h,w,C) uint8, one location (2,)) -> per-layer (N, D) features."""

  def features(state, objects, location):
    model = nnx.merge(graphdef, state)
    locs = jnp.broadcast_to(location, (objects.shape[0], 2))
    return layer_features(model, canvas.place(objects.astype(jnp.float32) / 255.0, locs, canvas_size))

  return jax.jit(features)


@functools.cache
def _similarity_fn(graphdef: nnx.GraphDef, canvas_size: int, num_classes: int):
  """(state, objects, labels, refs, locations (Lc,2)) -> per-layer ((Lc,) cos_same, (Lc,) cos_diff)."""

  def similarity(state, objects, labels, refs, locations):
    model = nnx.merge(graphdef, state)
    x = canvas.place_grid(objects.astype(jnp.float32) / 255.0, locations, canvas_size)
    n_loc, n_obj = x.shape[:2]
    feats = layer_features(model, x.reshape(n_loc * n_obj, *x.shape[2:]))
    out = []
    for ref, f in zip(refs, feats):
      f = f.reshape(n_loc, n_obj, -1)
      out.append((cos_same(ref, f), cos_diff(f, labels, num_classes)))
    return out

  return jax.jit(similarity)


def similarity_map(
  model: nnx.Module,
  objects: jax.Array,
  labels: jax.Array,
  locations: np.ndarray,
  reference: tuple[int, int],
  canvas_size: int,
  batch_size: int = 4096,
  num_classes: int | None = None,
) -> np.ndarray:
  """Normalised similarity of every layer at every location: (layers, L) float numpy array.

  All objects at one location are evaluated together (cos_diff pairs them all), in chunks of locations.
  """
  graphdef, state = nnx.split(model)
  objects, labels = jnp.asarray(objects), jnp.asarray(labels)
  num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
  refs = _features_fn(graphdef, canvas_size)(state, objects, jnp.asarray(reference, jnp.int32))
  fn = _similarity_fn(graphdef, canvas_size, num_classes)
  chunk = batch_size // max(1, int(objects.shape[0]))  # locations per call, all objects at each
  per_layer = evaluation.map_chunks(
    lambda locs: fn(state, objects, labels, refs, locs), [np.asarray(locations, np.int32)], chunk
  )
  return np.stack([np.asarray(normalised_similarity(s, d)) for s, d in per_layer])
