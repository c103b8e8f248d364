"""WiSE-FT along probe -> LP-FT (Wortsman et al., CVPR 2022, arXiv 2109.01903): every weight interpolated
between LP-FT's probe and the LP-FT model fine-tuned from it, as the paper's fine-tuned end is
fine-tuned from its zero-shot end; no training of its own."""

from __future__ import annotations

from collections.abc import Sequence

from shiftbench.methods.base import Context, Finetuned, Method, check_grid
from shiftbench.methods.lpft import LPFT, PROBE_RATES, PROBE_STEPS
from shiftbench.methods.wise import wise_model


class WiSELPFT(Method):
  """θ(α) = (1 - α) θ_probe + α θ_LP-FT, one row per α of `alphas`, for 0 < α < 1 with its BatchNorm
  statistics re-estimated on B (`ctx.recalibrate`); α = 0 is LP-FT's probe and α = 1 the LP-FT model,
  exactly. It takes LP-FT's own settings (the same defaults) and reads the probe and stage-2 model the LP-FT
  rows of those settings computed (`ctx.once`), so with the run's `lpft` entry's settings nothing trains
  again; with others it trains its own LP-FT once per rate."""

  name, title, colour = "wise_lpft", "WiSE-FT (probe → LP-FT)", "#d62728"
  setting_name, setting_symbol = "alpha", "α"

  def __init__(
    self,
    alphas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    probe_rates: Sequence[float] = PROBE_RATES,
    probe_steps: int | None = PROBE_STEPS,
    rate_factor: float = 0.1,
  ):
    self.alphas = check_grid(alphas, "WiSE-FT (probe → LP-FT) alphas", low=0.0, high=1.0)
    self.lpft = LPFT(probe_rates, probe_steps, rate_factor)
    self.needs = self.lpft.needs

  def run(self, ctx: Context, setting: float | None) -> Finetuned:
    alpha = float(setting)
    tuned = self.lpft.stage2(ctx)
    model = wise_model(ctx, self.lpft.probe(ctx).model, tuned.model, alpha)
    stop = {"rule": "interpolated", "step": 0, "alpha": alpha, "lpft": tuned.stop["lpft"]}
    return Finetuned(model, [], [], stop, 0.0)
