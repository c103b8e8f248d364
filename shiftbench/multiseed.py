"""Several seeds trained side by side: one jitted step `vmap`ped over independent parameters.

Seed `s` here sees exactly what `train.train(..., seed=s)` sees: its own initial model, its own
`jax.random.key(s)` folded with the step number for batches and placements, its own optimiser state.
Only the parameters, optimiser states and keys carry a seed axis; the objects on the device are shared.
The result equals separate runs to float tolerance (tests/test_multiseed.py), in one dispatch per step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from shiftbench import canvas, train


def _stack(trees: Sequence) -> object:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree, n: int) -> list:
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


@functools.cache
def _compiled_update(graphdef, tx, spec, placement, batch_size):
  """One step for every seed: vmap over (params, opt_state, rest, key); objects are broadcast."""
  step = train._make_step(graphdef, tx, spec, placement, batch_size)  # pylint: disable=protected-access

  def update(params, opt_state, rest, base_keys, start, images, labels):
    keys = jax.vmap(lambda k: jax.random.fold_in(k, start))(base_keys)
    return jax.vmap(step, in_axes=(0, 0, 0, 0, None, None))(params, opt_state, rest, keys, images, labels)

  return jax.jit(update, donate_argnums=(0, 1))


def train_seeds(models: Sequence[nnx.Module], tx: optax.GradientTransformation, data: train.DeviceObjects,
                spec: canvas.CanvasSpec, placement: train.Placement, *, steps: int, batch_size: int,
                seeds: Sequence[int], mode: str = "full", log_every: int = 50) -> list[list[train.Metrics]]:
  """Trains `models[i]` with `seeds[i]`, all in one vmapped step, and updates each model in place.

  Args:
    models: one model per seed, same architecture (each built from its own init seed by the caller).
    tx, data, spec, placement, steps, batch_size, mode: as in `train.train`.
    seeds: the training seeds (batches and placements), one per model.
    log_every: host sync interval for the finite-loss check and the logged metrics.

  Returns:
    One metrics history per seed, logged at the same steps as `train.train`.
  """
  if len(models) != len(seeds) or not models:
    raise ValueError(f"need one model per seed, got {len(models)} models and {len(seeds)} seeds")
  spec.check_location(placement.location)
  for m in models:
    train.set_mode(m, mode)  # BatchNorm: batch stats for trained parts, running averages for a frozen one
  splits = [nnx.split(m, train.trainable_filter(mode), ...) for m in models]
  graphdef = splits[0][0]
  if any(g != graphdef for g, _, _ in splits[1:]):
    raise ValueError("train_seeds needs models of one architecture; train different ones separately")
  params = _stack([p for _, p, _ in splits])
  rest = _stack([r for _, _, r in splits])
  opt_state = jax.vmap(tx.init)(params)
  base_keys = jnp.stack([jax.random.key(int(s)) for s in seeds])
  update = _compiled_update(graphdef, tx, spec, placement, batch_size)
  histories: list[list[train.Metrics]] = [[] for _ in seeds]
  for done in range(1, steps + 1):
    params, opt_state, rest, metrics = update(params, opt_state, rest, base_keys, np.int32(done - 1),
                                              data.images, data.labels)
    if done % log_every == 0 or done == steps:
      host = {k: np.asarray(v) for k, v in metrics.items()}
      for i, seed in enumerate(seeds):
        logged = {k: float(v[i]) for k, v in host.items()}
        if not math.isfinite(logged["loss"]):
          raise FloatingPointError(f"seed {seed}: loss became {logged['loss']} at step {done}")
        histories[i].append({"step": done, **logged})
  for model, p, r in zip(models, _unstack(params, len(models)), _unstack(rest, len(models))):
    nnx.update(model, p, r)
    model.eval()  # as `train.train` leaves it: ready for evaluation
  return histories
