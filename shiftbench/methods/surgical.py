"""Surgical fine-tuning (Lee et al., ICLR 2023, arXiv 2210.11466): fine-tune only some layers. Here the
mirror of plain `head`: the conv blocks and the classifier train, the hidden FC layers stay pretrained."""

from __future__ import annotations

from shiftbench import models
from shiftbench.methods.base import Context, Finetuned, Method


class Surgical(Method):
  """Fine-tuning from a fresh classifier with the hidden FC layers frozen (kept pretrained, in eval mode)
  and everything else training (`models.SURGICAL`). Plain `head` trains the FC layers with the convs
  frozen; the two together say where fine-tuning at one location loses invariance. On a model without
  hidden FC layers it is plain `full` fine-tuning. Its rows are labelled `full`, the mode a row of a
  method that trains the backbone has."""

  name, title, colour = "surgical", "surgical FT", "#8c564b"

  def run(self, ctx: Context, setting: float | None) -> Finetuned:
    return ctx.finetune(ctx.fresh(), mode=models.SURGICAL, probe=True)
