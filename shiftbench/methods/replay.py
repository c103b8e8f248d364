"""Replay of the pretraining data: full fine-tuning on batches of which a fraction ρ is drawn from A at
pretraining placement, scored by A's pretrained classifier kept beside B's (`training/replay.py`)."""

from __future__ import annotations

from collections.abc import Sequence

from shiftbench.methods.base import Context, Finetuned, Method, Pretraining, check_grid
from shiftbench.training import replay as replays


def pretraining_of(ctx: Context, method: str) -> Pretraining:
  """The row's pretraining task, or a one-line error: `method` keeps A, which scratch and ImageNet rows lack."""
  if ctx.pretraining is None:
    raise ValueError(f"method {method!r} keeps what pretraining on A taught; its row has no A (scratch or imagenet)")
  return ctx.pretraining


class Replay(Method):
  """Replay: full fine-tuning from a fresh classifier where ρ of every batch (rounded to whole objects)
  comes from A's training objects at the pretraining placement, each scored by A's pretrained classifier
  (kept beside B's, training with the rest), one row per ρ of `rhos`. The loss is the mean cross-entropy
  over the whole batch, each object against its own task's classes; B's objects are the first of plain
  full fine-tuning's own draw. ρ = 0 replays nothing: plain full fine-tuning's own program and batches."""

  name, title, colour, needs_pretraining = "replay", "replay", "#e377c2", True
  setting_name, setting_symbol = "rho", "ρ"

  def __init__(self, rhos: Sequence[float] = (0.125, 0.25, 0.5)):
    self.rhos = check_grid(rhos, "replay rhos", low=0.0, high=1.0)
    if self.rhos[-1] == 1.0:
      raise ValueError(f"replay rhos must be below 1 (a batch keeps some of B), got {list(self.rhos)}")

  def run(self, ctx: Context, setting: float | None) -> Finetuned:
    rho = float(setting)
    if rho == 0:
      return ctx.finetune(ctx.fresh(), mode="full", probe=True)
    a = pretraining_of(ctx, self.name)
    model = ctx.fresh()
    replays.attach(model, a.model().head.classifier)
    tuned = ctx.finetune(model, mode="full", probe=True, replay=(replays.Replay(rho, a.placement), a.objects))
    replays.detach(tuned.model)  # B's model: A's classifier goes
    return tuned
