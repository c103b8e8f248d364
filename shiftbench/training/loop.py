"""Training: `train` runs a model's steps in chunks of jitted dispatches (`programs`), each step a pure
function that draws indices, composes canvases on the device and updates (`step`), with evaluation,
checkpoints and the stopping rule between chunks (`schedule`, `stopping`).

The model is split once into (graphdef, trainable params, everything else) with `nnx.split`; the step
merges them back inside `jit`, so there is no per-call graph traversal. `head` and `last` fine-tuning only
differ in which params are trainable (`last`: the classifier; `head`: hidden FC layers + classifier): the frozen
part rides along as a constant and XLA drops its backward pass.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import jax
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from shiftbench import models
from shiftbench.data import canvas
from shiftbench.data.device import DeviceObjects
from shiftbench.training import programs, resume
from shiftbench.training import replay as replays
from shiftbench.training.schedule import schedule, steps_per_dispatch
from shiftbench.training.step import Placement, set_mode
from shiftbench.training.stopping import Metrics, UntilAccuracy, check_divergence

log = logging.getLogger(__name__)


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
    shapes = functools.partial(programs.argument_shapes, params, tx, rest, base_key, data)
    k = programs.resolve_dispatch(dispatch, program_key, mode, shapes, type(model).__name__)
    sched = plan(k)
  update = programs.program((*program_key, k, *mixed), mode)

  def sync_model():
    nnx.update(model, params, rest)

  if sched.evaluate_start:
    on_eval(0, model)
  with tqdm(total=steps, initial=done, desc=desc, unit="step", leave=False, dynamic_ncols=True, disable=None) as bar:
    for chunk in sched.chunks:
      # the one-step program (for chunks shorter than k) compiles on first use
      program = update if chunk.scan else programs.program((*program_key, 1, *mixed), mode)
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
