"""Training: a pure jitted step that draws indices, composes canvases on the device and updates.

The model is split once into (graphdef, trainable params, everything else) with `nnx.split`; the step
merges them back inside `jit`, so there is no per-call graph traversal. `head` and `last` fine-tuning only
differ in which params are trainable (`last`: the classifier; `head`: hidden FC layers + classifier): the frozen
part rides along as a constant and XLA drops its backward pass.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from shiftbench import models
from shiftbench.data import canvas
from shiftbench.data.device import DeviceObjects
from shiftbench.infra.errors import DivergenceError
from shiftbench.training import conv_forms, descent, resume
from shiftbench.training import replay as replays
from shiftbench.training.schedule import schedule, steps_per_dispatch

log = logging.getLogger(__name__)
Metrics = dict[str, float]


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where training objects go: a regime, its base location and jitter radius (docs/protocol.md)."""

  regime: str
  location: tuple[int, int]
  jitter: int = 0


@dataclasses.dataclass
class UntilAccuracy:
  """Biscione & Bowers' stopping rule: stop once the running mean of training accuracy over the last
  `window` steps reaches `threshold` (the `steps` budget stays the cap).

  Every step's batch accuracy enters the mean, so the rule reads the true training accuracy to within
  sqrt(p(1-p) / (batch x window)) (0.002 at p = 0.97, batch 32, window 200) and fires soon after that
  accuracy passes the threshold; a rule that needs every single batch at or above the threshold would
  almost never fire at batch 32. It is checked at the end of each chunk of steps (the model exists only
  there: a dispatch, cut short at evaluation steps and checkpoints, `schedule.py`), so `stopped_at`, the
  step training ended at, is a chunk's end (a multiple of the steps per dispatch between evaluation
  steps); None when the cap came first.
  """

  threshold: float
  window: int
  stopped_at: int | None = None
  mean: float | None = None  # the running mean when it was last checked (None before `window` steps)
  _recent: collections.deque = dataclasses.field(init=False, repr=False)  # the last `window` accuracies

  def __post_init__(self):
    self._recent = collections.deque(maxlen=self.window)

  def update(self, step: int, accs) -> bool:
    """Adds the batch accuracies of the steps up to `step` (in order) and says whether to stop there."""
    for acc in np.asarray(accs, np.float64).reshape(-1):
      self._recent.append(float(acc))
    if len(self._recent) < self.window:
      return False
    self.mean = math.fsum(self._recent) / self.window
    if self.mean >= self.threshold:
      self.stopped_at = step
    return self.stopped_at is not None

  def record(self) -> dict[str, Any]:
    """What a row records of this rule (`finetune_stop`), once training ended."""
    return {"rule": "until_accuracy", "threshold": self.threshold, "window": self.window, "final_mean": self.mean}


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


def _make_step(
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


@functools.cache
def _compiled_update(graphdef, tx_update, spec, placement, batch_size, k, replay=None):
  """One jitted dispatch running `k` steps (a `lax.scan` when k > 1); cached so sweeps never retrace. Keyed
  by the optimiser's update function, not the optimiser: the rates of `optimizers.at_rates` share one, so
  every rate runs one compiled program (the rate is in `opt_state`). `replay`: (`replay.Replay`, B's
  number of classes) for the replay step, whose A objects and labels follow `labels` as arguments."""
  if replay is None:
    step = _make_step(graphdef, tx_update, spec, placement, batch_size)
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
  shapes `shapes()` (`_shapes`). `auto` is 10 (`steps_per_dispatch`), except on CPU for a step with convs
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
  args, program_key = _shapes(params, tx, rest, seed, data), (graphdef, tx.update, spec, placement, batch_size)
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


def _shapes(params, tx, rest, seed, data) -> tuple:
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


def _program(key: tuple, mode: str) -> Callable:
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


# Cross-entropy starts near log K (a fresh classifier) and falls. Above DIVERGENCE_FACTOR * log K + 1
# it is divergence, not noise: noisy tiny-batch training stays well below (K = 2: 3.8, K = 10: 10.2),
# while a learning rate far too high drives it to 1e2-1e7. Held for DIVERGENCE_PATIENCE logged points in
# a row, or at the last step (where it stays), it fails the run. No reference to the first logged loss:
# with one log point per few hundred steps, that one may already be diverged.
DIVERGENCE_FACTOR, DIVERGENCE_PATIENCE = 4.0, 3


def check_divergence(history: list[Metrics], num_classes: int, desc: str, final: bool = False) -> None:
  """Raises `DivergenceError` if the latest logged loss is non-finite, or far above log K for
  `DIVERGENCE_PATIENCE` logged points in a row (or at the last step)."""
  step, loss = history[-1]["step"], history[-1]["loss"]
  if not math.isfinite(loss):
    raise DivergenceError(f"{desc}: loss became {loss} at step {step}; lower the learning rate or check the data")
  log_k = math.log(max(num_classes, 2))
  limit = DIVERGENCE_FACTOR * log_k + 1.0
  recent = [h["loss"] for h in history[-DIVERGENCE_PATIENCE:]]
  if loss > limit and (final or (len(recent) == DIVERGENCE_PATIENCE and min(recent) > limit)):
    raise DivergenceError(
      f"{desc}: training diverged at step {step}: loss {loss:.4g}, far above log(K) = {log_k:.3g} where it "
      f"starts (first logged {history[0]['loss']:.4g} at step {history[0]['step']}); the learning rate is "
      "probably too high: lower it"
    )


def train(
  model: nnx.Module,
  tx: optax.GradientTransformation,
  data: DeviceObjects,
  spec: canvas.CanvasSpec,
  placement: Placement,
  *,
  steps: int,
  batch_size: int,
  seed: int | jax.Array,
  mode: str = "full",
  dispatch: int | str = "auto",
  log_every: int = 50,
  eval_every: int = 0,
  eval_steps: tuple[int, ...] = (),
  on_eval: Callable[[int, nnx.Module], None] | None = None,
  desc: str = "train",
  checkpoints: resume.Checkpoints | None = None,
  until: UntilAccuracy | None = None,
  replay: tuple[replays.Replay, DeviceObjects] | None = None,
) -> list[Metrics]:
  """Trains `model` in place for `steps` steps and returns the logged metrics.

  Args:
    model: the network; its params and batch stats are updated in place (via `nnx.update`) when training
      ends and before every `on_eval` call; it is left in eval mode (`model.eval()`) at the end.
    tx: the optax optimiser.
    data: training objects on the device.
    spec, placement: canvas geometry and where objects are placed.
    steps, batch_size, seed: the budget and the randomness: batches and placements come from `seed`, a
      key (the protocol passes its phase's stream, `streams.stream`) or an int.
    mode: `full` (all params), `head` (backbone frozen) or `last` (the classifier only).
    dispatch: steps per jitted call, or `auto`.
    log_every: host sync interval for the progress bar and the finite-loss check.
    eval_every, eval_steps, on_eval: call `on_eval(step, model)` at step 0, at each of `eval_steps`, every
      `eval_every` steps and at the end.
    desc: progress bar label.
    checkpoints: resumable checkpoints: training continues from the last one there (bit-identical to not
      stopping) and saves one every `checkpoints.every` steps, rounded up to a multiple of `dispatch`.
    until: a stopping rule checked after every chunk (`steps` is then the cap); None trains `steps`.
    replay: (what to replay, A's objects): part of every batch drawn from A (`training/replay.py`); the
      model's classifier must be a `replay.PairedClassifier` (`replay.attach`). None: B's objects only.

  How the steps are cut into chunks (dispatches, evaluation steps, logging, checkpoints, where the stopping
  rule is checked) is `schedule.schedule`'s.
  """
  spec.check_location(placement.location)
  set_mode(model, mode)
  graphdef, params, rest = nnx.split(model, models.trainable(mode), ...)
  opt_state = tx.init(params)
  # The replay step's static part keys its program (after `k`); A's objects are its last arguments. Its
  # steps per dispatch are plain fine-tuning's of the same model (`resolve_dispatch`: the same convs).
  mixed, extra = (), ()
  if replay is not None:
    mixed, extra = ((replay[0], data.num_classes),), (replay[1].images, replay[1].labels)
  base_key = seed if isinstance(seed, jax.Array) else jax.random.key(seed)
  program_key = (graphdef, tx.update, spec, placement, batch_size)
  history: list[Metrics] = []
  done = 0
  saved = checkpoints.latest({"params": params, "opt_state": opt_state, "rest": rest}) if checkpoints else None
  if saved is not None and saved[0] <= steps:
    done, tree, history = saved
    params, opt_state, rest = tree["params"], tree["opt_state"], tree["rest"]
    log.info("%s: resumed from step %d of %d (%s)", desc, done, steps, checkpoints.directory)
  plan = functools.partial(
    schedule,
    steps,
    evaluate=on_eval is not None,
    eval_every=eval_every,
    eval_steps=eval_steps,
    checkpoint_every=checkpoints.every if checkpoints is not None else 0,
    log_every=log_every,
    resume_from=done,
  )
  k = steps_per_dispatch(dispatch)
  sched = plan(k)
  if any(chunk.scan for chunk in sched.chunks):  # else no scan runs, whatever `auto` resolves to
    shapes = functools.partial(_shapes, params, tx, rest, base_key, data)
    k = resolve_dispatch(dispatch, program_key, mode, shapes, type(model).__name__)
    sched = plan(k)
  update = _program((*program_key, k, *mixed), mode)

  def sync_model():
    nnx.update(model, params, rest)

  if sched.evaluate_start:
    on_eval(0, model)
  with tqdm(total=steps, initial=done, desc=desc, unit="step", leave=False, dynamic_ncols=True, disable=None) as bar:
    for chunk in sched.chunks:
      # the one-step program (for chunks shorter than k) compiles on first use
      program = update if chunk.scan else _program((*program_key, 1, *mixed), mode)
      accs = []  # every step's batch accuracy, for the stopping rule
      for start in chunk.dispatches:
        params, opt_state, rest, metrics = program(
          params, opt_state, rest, base_key, np.int32(start), data.images, data.labels, *extra
        )
        accs.append(metrics["accs"])
      done = chunk.stop
      bar.update(chunk.size)
      stopping = until is not None and until.update(done, np.concatenate([np.asarray(a) for a in accs]))
      if chunk.log or stopping:
        logged = {key: float(v) for key, v in metrics.items() if key != "accs"}
        history.append({"step": done, **logged})
        check_divergence(history, data.num_classes, desc, final=done == steps or stopping)
        bar.set_postfix(loss=f"{logged['loss']:.3f}", acc=f"{logged['acc']:.3f}")
      if chunk.checkpoint:
        checkpoints.save(done, {"params": params, "opt_state": opt_state, "rest": rest}, history)
      if stopping:
        break
      if chunk.evaluate:
        sync_model()
        on_eval(done, model)
  sync_model()
  model.eval()
  if sched.evaluate_end:
    on_eval(done, model)
  return history
