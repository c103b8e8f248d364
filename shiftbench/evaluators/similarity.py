"""Representation similarity across locations (Biscione & Bowers, JMLR 2021), per layer.

For a layer with activations f, an object i at the fine-tune location p_ft and the same object at p:
  cos_same(p) = mean_i cos(f(x_i @ p_ft), f(x_i @ p))
  cos_diff(p) = mean over pairs (i, j) with label_i != label_j of cos(f(x_i @ p), f(x_j @ p))
  similarity(p) = (cos_same(p) - cos_diff(p)) / (1 - cos_diff(p))
1 = the layer represents the object identically wherever it is; 0 = no more alike than two different
classes at the same place. The summary is the mean over G_off (as for off-location accuracy).

The layers are `predictor.layer_features`'s: every conv block, every hidden FC layer (or the classifier's
input) and the logits. The summary (`Similarity`) is the penultimate layer's: the classifier's input.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from shiftbench.evaluators.chunks import map_chunks
from shiftbench.evaluators.predictor import Forward, Predictor

_EPS = 1e-8


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


def _reference_features(model: Forward, objects: jax.Array, location: jax.Array) -> list[jax.Array]:
  """objects (N,h,w,C) uint8, one location (2,) -> per-layer (N, D) features."""
  locs = jnp.broadcast_to(location, (objects.shape[0], 2))
  return model.features(model.place(objects, locs))


def _cosines(
  model: Forward,
  objects: jax.Array,
  labels: jax.Array,
  refs: list[jax.Array],
  locations: jax.Array,
  num_classes: int,
) -> list[tuple[jax.Array, jax.Array]]:
  """objects, labels, refs, locations (Lc,2) -> per-layer ((Lc,) cos_same, (Lc,) cos_diff)."""
  x = model.place_grid(objects, locations)
  n_loc, n_obj = x.shape[:2]
  feats = model.features(x.reshape(n_loc * n_obj, *x.shape[2:]))
  out = []
  for ref, f in zip(refs, feats):
    f = f.reshape(n_loc, n_obj, -1)
    out.append((cos_same(ref, f), cos_diff(f, labels, num_classes)))
  return out


def similarity_map(
  predictor: Predictor,
  objects: jax.Array,
  labels: jax.Array,
  locations: np.ndarray,
  reference: tuple[int, int],
  batch_size: int = 4096,
  num_classes: int | None = None,
) -> np.ndarray:
  """Normalised similarity of every layer at every location.

  All objects at one location are evaluated together (cos_diff pairs them all), in chunks of locations.

  Args:
    predictor: the model in eval mode.
    objects: (N, h, w, C) uint8 objects.
    labels: (N,) int labels.
    locations: (L, 2) int top-left coordinates, all valid.
    reference: the location every object's features are compared with (the fine-tune location).
    batch_size: canvases per forward pass (whole locations of N objects each).
    num_classes: K; None takes the largest label + 1.

  Returns:
    (layers, L) float numpy array, in `predictor.layer_names` order.
  """
  objects, labels = jnp.asarray(objects), jnp.asarray(labels)
  num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
  refs = predictor.jit(_reference_features)(objects, jnp.asarray(reference, jnp.int32))
  fn = predictor.jit(_cosines, num_classes=num_classes)
  chunk = batch_size // max(1, int(objects.shape[0]))  # locations per call, all objects at each
  per_layer = map_chunks(lambda locs: fn(objects, labels, refs, locs), [np.asarray(locations, np.int32)], chunk)
  return np.stack([np.asarray(normalised_similarity(s, d)) for s, d in per_layer])
