"""When training ends early: Biscione & Bowers' stopping rule (`UntilAccuracy`), and divergence, which
fails the run (`check_divergence`)."""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any

import numpy as np

from shiftbench.infra.errors import DivergenceError

Metrics = dict[str, float]


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
