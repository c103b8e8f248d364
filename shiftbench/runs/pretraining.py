"""Pretraining on dataset A: the checkpoint that a (model, regime, seed) is cached under, and the model
restored from the shared cache, waited for, or trained here and published (`pretrained.obtain`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from flax import nnx

from shiftbench.data import streams
from shiftbench.data.device import DeviceObjects
from shiftbench.rows import schema
from shiftbench.runs import plan, preflight
from shiftbench.runs.settings import Settings
from shiftbench.training import checkpoints as pretrained
from shiftbench.training import loop, resume

log = logging.getLogger(__name__)


def checkpoint_of(s: Settings, name: str, regime: str, seed: int, data_hash: str) -> tuple[Path, dict[str, Any]]:
  """Where the model pretrained under `regime` is cached, and everything that determines it: the model's
  resolved config, the content hash of dataset A, canvas, placement, budget, optimiser, seed, streams."""
  placement = loop.Placement(regime, s.pretrain_location, s.pretrain_jitter)
  description = {
    "model": s.models[name],
    "data_sha256": data_hash,
    "canvas": [s.spec.canvas_size, s.spec.object_size],
    "placement": [regime, *placement.location, placement.jitter],
    "steps": s.pretrain.steps,
    "batch_size": s.pretrain.batch_size,
    "steps_per_dispatch": s.pretrain.dispatch,
    "optimizer": s.optimizers["pretrain"],
    "seed": seed,
    "streams": {"init": streams.PRETRAIN_INIT, "batches": streams.PRETRAIN_BATCHES},
  }
  return pretrained.checkpoint_path(s.checkpoint_dir, f"{name}-{regime}-s{seed}", description), description


def check_cache_writable(s: Settings, done: Collection[schema.RowId], data_hash: str) -> None:
  """Fails now, not after pretraining, if a checkpoint this run must save cannot be written (a read-only
  cache that already holds every needed checkpoint is fine)."""
  for group in plan.groups(s):
    if group.regime in ("scratch", "imagenet") or all(rid in done for rid in group.rows):
      continue
    if not pretrained.exists(checkpoint_of(s, group.model, group.regime, group.seed, data_hash)[0]):
      preflight.check_writable(
        s.checkpoint_dir,
        "checkpoint cache (paths.checkpoint_dir)",
        "set $SHIFTBENCH_CACHE or paths.checkpoint_dir to a writable directory",
      )
      return


def pretrained_model(
  s: Settings,
  name: str,
  regime: str,
  seed: int,
  build: Callable[[], nnx.Module],
  data: DeviceObjects,
  data_hash: str,
) -> tuple[nnx.Module, dict[str, Any]]:
  """The model pretrained on A (`data`, content hash `data_hash`) under `regime`: restored, waited for
  (another job pretrains it under its lock) or pretrained here and published. `build` makes the freshly
  initialised model."""
  placement = loop.Placement(regime, s.pretrain_location, s.pretrain_jitter)
  path, description = checkpoint_of(s, name, regime, seed, data_hash)
  label = f"{name}/{regime}/s{seed}"

  def pretrain(model: nnx.Module, resume_dir: Path | None) -> dict[str, Any]:
    # One line where no bar is drawn (a log, a SLURM job); the bar of `loop.train` where one is.
    log.info("pretraining %s: %d steps of batch %d", label, s.pretrain.steps, s.pretrain.batch_size)
    start = time.perf_counter()
    every = s.checkpoint_every if resume_dir is not None else 0
    checkpoints = resume.Checkpoints(resume_dir, every, f"pretrain {label}") if every else None
    try:
      history = loop.train(
        model,
        s.transforms["pretrain"],
        data,
        s.spec,
        placement,
        steps=s.pretrain.steps,
        batch_size=s.pretrain.batch_size,
        seed=streams.stream(seed, streams.PRETRAIN_BATCHES),
        dispatch=s.pretrain.dispatch,
        desc=f"pretrain {label}",
        checkpoints=checkpoints,
      )
    finally:
      if checkpoints is not None:
        checkpoints.close()
    return {"description": description, "history": history, "seconds": time.perf_counter() - start}

  model, meta, _ = pretrained.obtain(
    path, build, pretrain, label=label, description=description, wait_timeout_s=s.wait_timeout_s
  )
  return model, meta
