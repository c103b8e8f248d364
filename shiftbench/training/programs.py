"""The compiled training programs: one jitted dispatch of `k` steps per model, optimiser update, canvas,
placement and batch size (`_compiled_update`, cached so sweeps never retrace), how many steps a dispatch
runs (`resolve_dispatch`), and programs compiled ahead on a background thread (`compile_ahead`) that the
loop (`loop.train`) then runs (`program`)."""

from __future__ import annotations

import concurrent.futures
import functools
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from shiftbench import models
from shiftbench.data import canvas
from shiftbench.data.device import DeviceObjects
from shiftbench.training import conv_forms
from shiftbench.training import replay as replays
from shiftbench.training.schedule import schedule, steps_per_dispatch
from shiftbench.training.step import Placement, make_step, set_mode

log = logging.getLogger(__name__)


@functools.cache
def _compiled_update(graphdef, tx_update, spec, placement, batch_size, k, replay=None):
  """One jitted dispatch running `k` steps (a `lax.scan` when k > 1); cached so sweeps never retrace. Keyed
  by the optimiser's update function, not the optimiser: the rates of `optimizers.at_rates` share one, so
  every rate runs one compiled program (the rate is in `opt_state`). `replay`: (`replay.Replay`, B's
  number of classes) for the replay step, whose A objects and labels follow `labels` as arguments."""
  if replay is None:
    step = make_step(graphdef, tx_update, spec, placement, batch_size)
  else:
    step = replays.make_step(graphdef, tx_update, spec, placement, batch_size, *replay)

  def update(params, opt_state, rest, base_key, start, images, labels, *extra):
    keys = jax.vmap(lambda i: jax.random.fold_in(base_key, i))(start + jnp.arange(k))
    if k == 1:
      params, opt_state, rest, m = step(params, opt_state, rest, keys[0], images, labels, *extra)
      return params, opt_state, rest, {**m, "accs": m["acc"][None]}

    def body(carry, key):
      p, o, r = carry
      p, o, r, m = step(p, o, r, key, images, labels, *extra)
      return (p, o, r), m

    (params, opt_state, rest), ms = jax.lax.scan(body, (params, opt_state, rest), keys)
    # The last step's loss and accuracy, and every step's accuracy (the stopping rule's running mean).
    return params, opt_state, rest, {**jax.tree.map(lambda v: v[-1], ms), "accs": ms["acc"]}

  return jax.jit(update, donate_argnums=(0, 1))  # not `rest`: in `head`/`last` modes it holds the frozen part


# Steps per dispatch that `auto` resolved to on CPU, by `_compiled_update`'s key (without `k`) and the mode.
_AUTO_DISPATCH: dict[tuple, int] = {}


def resolve_dispatch(dispatch: int | str, key: tuple, mode: str, shapes: Callable[[], tuple], name: str) -> int:
  """Steps per jitted call for the program `_compiled_update(*key, k)` at `mode`, whose arguments have the
  shapes `shapes()` (`argument_shapes`). `auto` is 10 (`steps_per_dispatch`), except on CPU for a step with convs
  that XLA:CPU runs as generic loops inside a `lax.scan` (`conv_forms`: e.g. `nnx.Conv`'s gradients):
  there it is 1, which runs them as fast kernels, and it logs why (once per program). Found by tracing
  the 10-step program, a trace that `jit` and `lower` then reuse (nothing is compiled)."""
  k = steps_per_dispatch(dispatch)
  if dispatch != "auto" or k == 1 or jax.default_backend() != "cpu":
    return k
  if (key, mode) not in _AUTO_DISPATCH:
    slow = conv_forms.slow_in_a_loop(_compiled_update(*key, k).trace(*shapes()).jaxpr)
    if slow:
      log.info(
        "%s (%s, %s placement): 1 training step per dispatch, not %d (steps_per_dispatch=auto): %d of its "
        "training step's convs (e.g. nnx.Conv's gradients) run as slow generic loops inside lax.scan on CPU; "
        "convs built with conv_general_dilated=shiftbench.models.conv_general_dilated run %d steps per "
        "dispatch (docs/api.md, Speed)",
        name,
        mode,
        key[3].regime,  # the placement: pretraining's regime, or `fixed` for fine-tuning
        k,
        slow,
        k,
      )
    _AUTO_DISPATCH[key, mode] = 1 if slow else k
  return _AUTO_DISPATCH[key, mode]


# Programs compiled ahead (`compile_ahead`), by `_compiled_update`'s key and the mode (which splits the
# model's state into other trees for the same graph, one program each): XLA compiles on one thread, so
# a program compiled in the background while the run trains and evaluates costs no wall time on a
# machine with a core to spare. One worker: compiles queue rather than crowd the cores training uses.
_AHEAD: dict[tuple, concurrent.futures.Future] = {}
_COMPILER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="shiftbench-compile")


def compile_ahead(
  model: nnx.Module,
  tx: optax.GradientTransformation,
  data: DeviceObjects,
  spec: canvas.CanvasSpec,
  placement: Placement,
  *,
  steps: int,
  batch_size: int,
  seed: jax.Array,
  mode: str = "full",
  dispatch: int | str = "auto",
  eval_every: int = 0,
  eval_steps: tuple[int, ...] = (),
  evaluate: bool = False,
) -> None:
  """Starts compiling the programs `train` will run for these arguments (the `k`-step scan and/or the
  one-step program, as its schedule uses them), in a background thread. `model` may be abstract
  (`nnx.eval_shape`) and is left as it was; `seed` is a key of the kind `train` gets. Tracing and lowering
  happen here, on the caller's thread; only XLA's compile runs in the background. `train` then runs the
  compiled programs (waiting for them if needed): the executables `jit` would build, so the same numbers."""
  model = nnx.clone(model) if not _abstract(model) else model
  set_mode(model, mode)
  graphdef, params, rest = nnx.split(model, models.trainable(mode), ...)
  args, program_key = argument_shapes(params, tx, rest, seed, data), (graphdef, tx.update, spec, placement, batch_size)
  plan = functools.partial(schedule, steps, evaluate=evaluate, eval_every=eval_every, eval_steps=eval_steps)
  k = steps_per_dispatch(dispatch)
  chunks = plan(k).chunks
  if any(chunk.scan for chunk in chunks):  # as `train` resolves it
    k = resolve_dispatch(dispatch, program_key, mode, lambda: args, type(model).__name__)
    chunks = plan(k).chunks
  for each in sorted({k if c.scan else 1 for c in chunks}, reverse=True):
    key = (*program_key, each)
    if (key, mode) not in _AHEAD:
      lowered = _compiled_update(*key).lower(*args)
      _AHEAD[key, mode] = _COMPILER.submit(lowered.compile)


def drop_ahead() -> None:
  """Forgets every program compiled ahead, and cancels those not started: a run that ends (or fails)
  before it needed them does not wait at exit for their compiles, nor keep them in memory."""
  for future in _AHEAD.values():
    future.cancel()
  _AHEAD.clear()


def argument_shapes(params, tx, rest, seed, data) -> tuple:
  """The shapes and types of a program's arguments, as `train` passes them."""
  shape = lambda tree: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  return (
    shape(params),
    jax.eval_shape(tx.init, shape(params)),
    shape(rest),
    shape(seed),
    jax.ShapeDtypeStruct((), jnp.int32),
    shape(data.images),
    shape(data.labels),
  )


def _abstract(model: nnx.Module) -> bool:
  return any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(nnx.state(model)))


def program(key: tuple, mode: str) -> Callable:
  """The program for `_compiled_update`'s `key`: the one compiled ahead (waited for) where there is one,
  else the jitted one. A speed-up, never a result: if compiling ahead failed, or the arguments turn out
  not to be the ones it was compiled for, `jit` compiles it now."""
  ahead = _AHEAD.get((key, mode))
  if ahead is None:
    return _compiled_update(*key)
  try:
    compiled = ahead.result()
  except Exception as e:  # noqa: BLE001
    log.debug("compiling ahead failed (%s); compiling now", e)
    _AHEAD.pop((key, mode), None)
    return _compiled_update(*key)

  def run(*args):
    nonlocal compiled
    if compiled is not None:
      try:
        return compiled(*args)
      except TypeError as e:  # raised on the arguments' types, before anything runs or is donated
        log.debug("the program compiled ahead takes other arguments (%s); compiling now", e)
        compiled = None
        _AHEAD.pop((key, mode), None)
    return _compiled_update(*key)(*args)

  return run
