"""LP-FT (Kumar et al., ICLR 2022, arXiv 2202.10054): full fine-tuning from the `last` row's model (the
pretrained layers with the linear probe trained on B) instead of a fresh classifier."""

from __future__ import annotations

from shiftbench.methods.base import Context, Finetuned, Method


class LPFT(Method):
  """LP-FT: full fine-tuning that starts from the `last` row's model, so the first step's classifier is
  the trained linear probe, not a random one (Kumar et al. 2022: a random head distorts the features).
  Step 0 of its curve is that probe's final point: the very model it starts from."""

  name, title, colour, needs = "lpft", "LP-FT", "#9467bd", ("last",)

  def run(self, ctx: Context, setting: float | None) -> Finetuned:
    return ctx.finetune(ctx.tuned("last"), mode="full", probe=True)
