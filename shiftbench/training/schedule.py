"""The training schedule: how a phase's steps are cut into jitted dispatches, and where the host looks at
the model between them. Pure Python (no JAX): `loop.train` runs exactly these chunks, so what a run computes
is fixed here and tested without training anything.

A chunk is a stretch of steps between two points where the host acts: it ends at every evaluation step
(step 0 is evaluated before the first chunk, the end after the last), so `on_eval` sees the model at exactly
the steps asked for; and at every periodic checkpoint, so a run resumed from one chunks (and so computes)
exactly as a run that never stopped. A chunk of `k` steps (the steps per dispatch) is one dispatch of the
scanned program; a shorter one runs step by step rather than compiling another scan length. Losses are
logged (and divergence checked) after chunks ending at or just past a multiple of `log_every`, and after
the last; a stopping rule is checked after every chunk (the model exists only there), so training can stop
at any chunk end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable


def steps_per_dispatch(requested: int | str) -> int:
  """`auto`: 10 training steps per jitted call (a `lax.scan`), on every backend.

  On CPU this needs the conv gradients written out in canonical form (`layers.conv2d`): XLA:CPU rewrites
  its own conv gradients into fast kernels only outside a while loop (docs/performance.md). A model whose
  step holds other convs (`nnx.Conv`'s own gradients) gets 1 there instead: `programs.resolve_dispatch`.
  """
  if requested == "auto":
    return 10
  k = int(requested)
  if k < 1:
    raise ValueError(f"steps_per_dispatch must be >= 1 or 'auto', got {requested}")
  return k


@dataclasses.dataclass(frozen=True)
class Chunk:
  """Steps `start` to `stop` (exclusive) and what the host does after them."""

  start: int
  stop: int
  scan: bool  # one dispatch of the `k`-step scan; else `stop - start` one-step dispatches
  log: bool  # log the loss and accuracy and check for divergence (also done when the stopping rule fires)
  checkpoint: bool  # save a resumable checkpoint (never at the end: the finished model is the result)
  evaluate: bool  # call `on_eval` (never after the last chunk: the end is evaluated after training)

  @property
  def size(self) -> int:
    return self.stop - self.start

  @property
  def dispatches(self) -> tuple[int, ...]:
    """The first step of each jitted call in this chunk."""
    return (self.start,) if self.scan else tuple(range(self.start, self.stop))


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Every chunk of a phase from where it starts (0, or the resumed step) to `steps`."""

  steps: int
  k: int  # steps per dispatch
  chunks: tuple[Chunk, ...]
  evaluate_start: bool  # evaluate at step 0 before training (not when resumed past it)
  evaluate_end: bool  # evaluate where training ends (`steps`, or where the stopping rule fired)

  @property
  def eval_steps(self) -> tuple[int, ...]:
    """The steps evaluated when training runs to `steps`, in order."""
    middle = tuple(c.stop for c in self.chunks if c.evaluate)
    return (0,) * self.evaluate_start + middle + (self.steps,) * self.evaluate_end

  @property
  def checkpoint_steps(self) -> tuple[int, ...]:
    return tuple(c.stop for c in self.chunks if c.checkpoint)


def schedule(
  steps: int,
  dispatch: int | str,
  *,
  evaluate: bool = False,
  eval_every: int = 0,
  eval_steps: Iterable[int] = (),
  checkpoint_every: int = 0,
  log_every: int = 50,
  resume_from: int = 0,
) -> Schedule:
  """The chunks of a phase of `steps` steps.

  Args:
    steps: the phase's budget (the cap, under a stopping rule).
    dispatch: steps per jitted call, or `auto` (`steps_per_dispatch`).
    evaluate: whether the model is evaluated at all; if so at step 0, at each of `eval_steps` inside
      (0, steps), every `eval_every` steps (0: never) and at the end.
    eval_every, eval_steps: the evaluation points (see `evaluate`).
    checkpoint_every: a resumable checkpoint this often (0: never), rounded up to a multiple of the steps
      per dispatch, so the chunks (and so every bit) are those of a run without checkpoints.
    log_every: the logging interval in steps.
    resume_from: the step training starts from (a checkpoint's; 0 for a fresh start).

  Returns:
    The `Schedule`: chunks from `resume_from` to `steps`, back to back.
  """
  k = steps_per_dispatch(dispatch)
  every_eval = eval_every if evaluate else 0
  evals = sorted({e for e in eval_steps if 0 < e < steps}) if evaluate else []
  every = -(-checkpoint_every // k) * k if checkpoint_every > 0 else 0

  def next_eval(after: int) -> int:
    """The first evaluation step after `after` (`steps` when there is none before the end)."""
    regular = (after // every_eval + 1) * every_eval if every_eval else steps
    return min([steps, regular, *(e for e in evals if e > after)])

  def evaluates_at(step: int) -> bool:
    return evaluate and (step in evals or bool(every_eval) and step % every_eval == 0)

  chunks, done = [], resume_from
  while done < steps:
    stop = next_eval(done)
    if every:  # and at every checkpoint, so a resumed run chunks alike
      stop = min(stop, (done // every + 1) * every)
    n = min(k, stop - done)
    end = done + n
    chunks.append(
      Chunk(
        start=done,
        stop=end,
        scan=n == k,
        log=end % log_every < n or end == steps,
        checkpoint=bool(every) and end % every == 0 and end != steps,
        evaluate=end == stop and end != steps and evaluates_at(end),
      )
    )
    done = end
  return Schedule(steps, k, tuple(chunks), evaluate_start=evaluate and resume_from == 0, evaluate_end=evaluate)
