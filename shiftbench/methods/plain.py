"""Plain fine-tuning: today's fine-tuning at a mode (`last`, `head`, `full`), what every other method is
compared with and starts from."""

from __future__ import annotations

from shiftbench.methods.base import Context, Finetuned, Method
from shiftbench.rows import schema


class Plain(Method):
  """Fine-tuning at the row's mode from a fresh classifier (head and full curves start at the probe).
  Figures colour its rows by mode, so it has no colour of its own."""

  name = schema.PLAIN

  def run(self, ctx: Context, setting: float | None) -> Finetuned:
    return ctx.finetune(ctx.fresh(), mode=ctx.mode, probe=ctx.mode != "last")
