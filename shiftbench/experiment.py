"""The protocol (DESIGN.md section 3): pretrain on A -> fine-tune on B at one location -> location maps.

One row per model x pretrain regime x fine-tune mode x seed. `results.json` is rewritten atomically
after every row, so an interrupted or requeued run resumes where it stopped and loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import jax
import numpy as np
from flax import nnx
from omegaconf import DictConfig

from shiftbench import (
  __version__,
  canvas,
  claims,
  comparison,
  compile_cache,
  evaluation,
  evaluators,
  leaderboard,
  locks,
  metrics,
  models,
  plots,
  preflight,
  pretrained,
  protocol_data,
  published_weights,
  results,
  resume,
  streams,
  terminal,
  tidy,
  train,
)
from shiftbench.data import ObjectSet
from shiftbench.models import torchvision_weights
from shiftbench.predictor import Predictor
from shiftbench.settings import Settings

log = logging.getLogger(__name__)
ModelFactory = Callable[..., nnx.Module]


class Protocol:
  """Holds the data on the device and the grid; runs pretraining, fine-tuning and evaluation."""

  def __init__(self, settings: Settings, data_a: ObjectSet, data_b: ObjectSet, output_dir: Path):
    self.s, self.output_dir = settings, output_dir
    self.data_a, self.data_b = data_a, data_b
    self.hash_a, self.hash_b = protocol_data.dataset_hash(data_a), protocol_data.dataset_hash(data_b)
    self.train_a, self.test_a = protocol_data.device_splits(data_a, settings)
    self.train_b, self.test_b = protocol_data.device_splits(data_b, settings, validation=True)
    # Every evaluation subset is a prefix of one class-balanced order (`subsets.balanced_order`).
    self.curve_b = train.DeviceObjects(
      self.test_b.images[: settings.curve_objects], self.test_b.labels[: settings.curve_objects], data_b.num_classes
    )
    self.grid = canvas.location_grid(settings.spec, settings.grid_stride, include=settings.finetune_location)
    # Optimisers are built once per phase so the jitted steps are cached across rows (no retrace).
    self.pretrain_tx = hydra.utils.instantiate(settings.optimizers["pretrain"])
    self.finetune_tx = hydra.utils.instantiate(settings.optimizers["finetune"])
    self.evaluators = evaluators.build(settings.eval_metrics)
    self.protocol = comparison.protocol_settings(
      settings.config, {"pretrain": self.hash_a, "finetune": self.hash_b}, __version__
    )
    # Shift metrics before fine-tuning for the latest (model, regime, seed): every mode shares them,
    # and rows run in that order, so one entry is all that is ever reused.
    self._before: dict[tuple, dict[str, Any]] = {}
    self.weights_cache = published_weights.cache_dir(settings.checkpoint_dir)  # named ImageNet weights

  # -- evaluation ---------------------------------------------------------------------------------
  def predictor(self, model: nnx.Module) -> Predictor:
    """`model` in eval mode for every evaluation of its current state (made again after it trains)."""
    return Predictor(model, self.s.spec.canvas_size)

  def location_map(self, predictor: Predictor, objects: train.DeviceObjects) -> dict[str, Any]:
    stats = evaluation.location_stats(
      predictor, objects.images, objects.labels, self.grid, self.s.eval_batch
    )  # reduced on the device: no (L, N) predictions
    acc = stats.accuracy()
    summary = metrics.summarize_location_map(
      acc, self.grid, self.s.finetune_location, 0, objects.num_classes, num_objects=len(objects)
    )
    return {
      "acc": acc,
      "everywhere": stats.everywhere,
      "distinct_predictions": int(stats.predicted.sum()),
      **{k: float(v) for k, v in summary.items()},
    }

  def shift_metrics(
    self, predictor: Predictor, seed: int, everywhere: np.ndarray | None = None, before: bool = False
  ) -> dict[str, Any]:
    """Every configured evaluator (`eval.metrics`) on B's test objects; reuses the map's worst-case flags."""
    ctx = evaluators.EvalContext(
      self.s.spec,
      self.grid,
      self.s.finetune_location,
      batch_size=self.s.eval_batch,
      seed=seed,
      map_everywhere=everywhere,
    )
    return evaluators.run_all(self.evaluators, predictor, self.test_b, ctx, before=before)

  # -- models -------------------------------------------------------------------------------------
  def build(self, factory: ModelFactory, num_classes: int, key: jax.Array) -> nnx.Module:
    return factory(
      num_classes=num_classes,
      canvas_size=self.s.spec.canvas_size,
      in_channels=self.data_a.object_shape[-1],
      rngs=nnx.Rngs(key),
    )

  def pretrained(self, name: str, factory: ModelFactory, regime: str, seed: int) -> tuple[nnx.Module, dict[str, Any]]:
    """The model pretrained on A under `regime`, restored from the shared cache or trained now."""
    s = self.s
    if regime == "imagenet":  # torchvision's ImageNet weights instead of pretraining on A (classifier: A's, new)
      model = self.build(factory, self.data_a.num_classes, streams.stream(seed, streams.PRETRAIN_INIT))
      weights, source = torchvision_weights.weights_for(s.pretrain_weights, name, model.arch, self.weights_cache)
      return model, {"weights": torchvision_weights.load_imagenet(model, weights, source)}
    placement = train.Placement(regime, s.pretrain_location, s.pretrain_jitter)
    path, description = checkpoint_of(s, name, regime, seed, self.hash_a)
    init = streams.stream(seed, streams.PRETRAIN_INIT)
    label = f"{name}/{regime}/s{seed}"

    def pretrain(model: nnx.Module, resume_dir: Path | None) -> dict[str, Any]:
      start = time.perf_counter()
      every = s.checkpoint_every if resume_dir is not None else 0
      checkpoints = resume.Checkpoints(resume_dir, every, f"pretrain {label}") if every else None
      try:
        history = train.train(
          model,
          self.pretrain_tx,
          self.train_a,
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

    # Restored, waited for (another job pretrains it under its lock) or pretrained here and published.
    model, meta, _ = pretrained.obtain(
      path,
      lambda: self.build(factory, self.data_a.num_classes, init),
      pretrain,
      label=label,
      description=description,
      wait_timeout_s=s.wait_timeout_s,
    )
    return model, meta

  def rekey(self, row: dict[str, Any], extra: dict[str, Any]) -> None:
    """Adds settings known only once a row ran (the content hash of its ImageNet weights) to its keys."""
    row["comparison"] = dict(sorted({**row["comparison"], **extra}.items()))
    row["comparison_key"] = comparison.key_of(row["comparison"])
    row["protocol_key"] = comparison.key_of(comparison.protocol_part(row["comparison"]))

  # -- one row ------------------------------------------------------------------------------------
  def finetune_row(
    self,
    name: str,
    factory: ModelFactory,
    regime: str,
    mode: str,
    seed: int,
    source: nnx.Module | None,
    a_before: dict[str, Any] | None,
  ) -> dict[str, Any]:
    s = self.s
    # Its own stream: the same classifier start for every regime and mode of a seed (paired comparisons),
    # and never pretraining's weights (a `scratch` row once started from pretraining seed s + 1's).
    model = self.build(factory, self.data_b.num_classes, streams.stream(seed, streams.FINETUNE_INIT))
    if source is not None:
      # Backbone and hidden FC layers carry over (copied: training donates its buffers); only the
      # classifier is new, sized for B's classes.
      models.transfer(source, model)
    curve: list[dict[str, Any]] = []
    eval_start = time.perf_counter()
    # Pretrained layers + fresh classifier: the same for every fine-tune mode, so computed once per row set.
    key = (name, regime, seed)
    if key not in self._before:
      self._before = {key: self.shift_metrics(self.predictor(model), seed, before=True)}
    before = self._before[key]
    eval_seconds = time.perf_counter() - eval_start

    def on_eval(step: int, m: nnx.Module):
      point = self.location_map(self.predictor(m), self.curve_b)
      curve.append({"step": step, **{k: point[k] for k in ("in_acc", "off_acc", "invariance", "in_pvalue")}})

    start = time.perf_counter()
    until = None if s.until_accuracy is None else train.UntilAccuracy(*s.until_accuracy)
    history = train.train(
      model,
      self.finetune_tx,
      self.train_b,
      s.spec,
      train.Placement("fixed", s.finetune_location),
      steps=s.finetune.steps,
      batch_size=s.finetune.batch_size,
      seed=streams.stream(seed, streams.FINETUNE_BATCHES),
      mode=mode,
      dispatch=s.finetune.dispatch,
      eval_every=s.eval_every,
      on_eval=on_eval,
      desc=f"finetune {name}/{regime}/{mode}/s{seed}",
      until=until,
    )
    stop = (
      {"rule": "steps", "step": s.finetune.steps}
      if until is None or until.stopped_at is None
      else {
        "rule": "until_accuracy",
        "step": until.stopped_at,
        "threshold": until.threshold,
        "patience": until.patience,
      }
    )
    train_seconds = time.perf_counter() - start
    trained = self.predictor(model)  # the fine-tuned state: one for its map and its shift metrics
    final = self.location_map(trained, self.test_b)
    eval_start = time.perf_counter()
    shift = self.shift_metrics(trained, seed, final["everywhere"])
    eval_seconds += time.perf_counter() - eval_start
    a_after = None
    if source is not None and a_before is not None:  # (no A map for ImageNet weights: A is not their task)
      if mode == "last":  # only B's classifier trained: A's network is exactly the one before
        a_after = a_before
      else:
        a_model = nnx.clone(source)  # A's classifier on the fine-tuned layers; `source` stays pretrained
        nnx.update(a_model, nnx.state(model, models.TRANSFERABLE))
        a_after = self.location_map(self.predictor(a_model), self.test_a)
    ys, xs = canvas.grid_axes(self.grid)
    acc2d = final["acc"].reshape(len(ys), len(xs))
    heatmap = plots.save_location_map(
      self.output_dir / "heatmaps" / f"{name}_{regime}_{mode}_s{seed}.png",
      acc2d,
      ys,
      xs,
      1.0 / self.data_b.num_classes,
      s.finetune_location,
      f"{name} | pretrain {regime} | {mode} | seed {seed}\ninvariance {_fmt(final['invariance'])}",
    )
    settings = comparison.row_settings(self.protocol, s.models[name])
    return {
      "model": name,
      "pretrain": regime,
      "finetune": mode,
      "seed": seed,
      "comparison_key": comparison.key_of(settings),
      "protocol_key": comparison.key_of(comparison.protocol_part(settings)),
      "eval_split": s.eval_split,
      "distinct_predictions": final["distinct_predictions"],
      "in_acc": final["in_acc"],
      "off_acc": final["off_acc"],
      "invariance": final["invariance"],
      "in_pvalue": final["in_pvalue"],
      "test_objects": len(self.test_b),
      "chance": 1.0 / self.data_b.num_classes,
      "finetune_steps": stop["step"],
      "finetune_stop": stop,
      "input_adapter": getattr(getattr(getattr(model, "backbone", None), "adapter", None), "kind", None),
      "finetune_location": list(s.finetune_location),
      "location_map": {"ys": ys, "xs": xs, "acc": acc2d},
      "curve": curve,
      "pretrain_invariance_before": None if a_before is None else a_before["invariance"],
      "pretrain_invariance_after": None if a_after is None else a_after["invariance"],
      "pretrain_in_acc_before": None if a_before is None else a_before["in_acc"],
      "pretrain_off_acc_before": None if a_before is None else a_before["off_acc"],
      "pretrain_in_acc_after": None if a_after is None else a_after["in_acc"],
      "pretrain_off_acc_after": None if a_after is None else a_after["off_acc"],
      "pretrain_invariance_lost": (None if a_after is None else a_before["invariance"] - a_after["invariance"]),
      "invariance_lost": None,  # filled in once the last and full rows of this seed both exist
      "params": models.param_count(model),
      **shift,
      **before,
      "eval_seconds": eval_seconds,
      "train_final": history[-1] if history else None,
      "finetune_seconds": train_seconds,
      "heatmap": str(heatmap.relative_to(self.output_dir)),
      "comparison": settings,
    }


def checkpoint_of(s: Settings, name: str, regime: str, seed: int, data_hash: str) -> tuple[Path, dict[str, Any]]:
  """Where the model pretrained under `regime` is cached, and everything that determines it: the model's
  resolved config, the content hash of dataset A, canvas, placement, budget, optimiser, seed, streams."""
  placement = train.Placement(regime, s.pretrain_location, s.pretrain_jitter)
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


def check_cache_writable(s: Settings, done: dict[tuple, Any], data_hash: str) -> None:
  """Fails now, not after pretraining, if a checkpoint this run must save cannot be written (a read-only
  cache that already holds every needed checkpoint is fine)."""
  for seed in s.seeds:
    for name in s.models:
      for regime in s.pretrain_regimes:
        if regime in ("scratch", "imagenet") or all((name, regime, mode, seed) in done for mode in s.modes_for(regime)):
          continue
        if not pretrained.exists(checkpoint_of(s, name, regime, seed, data_hash)[0]):
          preflight.check_writable(
            s.checkpoint_dir,
            "checkpoint cache (paths.checkpoint_dir)",
            "set $SHIFTBENCH_CACHE or paths.checkpoint_dir to a writable directory",
          )
          return


def fill_invariance_lost(rows: dict[tuple, dict[str, Any]]) -> None:
  """invariance(last) - invariance(full) per model x pretrain x seed (the forgetting result: what the
  pretrained representation carried, minus what survives training everything at one location), written
  into both rows."""
  for (name, regime, _mode, seed), row in rows.items():
    last, full = rows.get((name, regime, "last", seed)), rows.get((name, regime, "full", seed))
    if last and full and _defined(last["invariance"]) and _defined(full["invariance"]):
      row["invariance_lost"] = last["invariance"] - full["invariance"]


def _defined(value: Any) -> bool:
  return value is not None and bool(np.isfinite(value))


def _fmt(value: float | None) -> str:
  """A score for a title or log line; `-` when undefined (in-location accuracy not above chance)."""
  return f"{value:.3f}" if _defined(value) else "-"


def run_experiment(cfg: DictConfig | dict[str, Any], output_dir: str | Path) -> dict[str, Any]:
  """Runs every row of the configured protocol and writes results, heatmaps and the leaderboard.

  `cfg` is checked and resolved once into `Settings` (the only view of it below this line). One process
  per run directory: a `locks.Busy` error at once if another process is running in it.
  """
  output_dir = preflight.check_writable(output_dir, "run directory", "choose another hydra.run.dir")
  with locks.run_dir(output_dir):
    return _run_experiment(cfg, output_dir)


def _run_experiment(cfg: DictConfig | dict[str, Any], output_dir: Path) -> dict[str, Any]:
  settings = Settings.from_config(cfg)
  output_dir = preflight.check_writable(output_dir, "run directory", "choose another hydra.run.dir")
  compile_cache.configure(settings.compile_cache, settings.compile_cache_dir)
  models = {name: hydra.utils.instantiate(mcfg) for name, mcfg in settings.models.items()}
  config = settings.config
  results_path = output_dir / "results.json"
  done = preflight.resumable_rows(results_path, config, settings.overwrite)
  data_a, data_b = protocol_data.load_datasets(settings)
  protocol = Protocol(settings, data_a, data_b, output_dir)
  check_cache_writable(settings, done, protocol.hash_a)
  if "imagenet" in settings.pretrain_regimes:  # named weights: downloaded (once) before any row trains
    torchvision_weights.prefetch(settings.pretrain_weights, models, protocol.weights_cache)
  record = {
    "config": config,
    "seeds": list(settings.seeds),
    "environment": results.environment(),
    "datasets": {
      "pretrain": data_a.name,
      "finetune": data_b.name,
      "pretrain_sha256": protocol.hash_a,
      "finetune_sha256": protocol.hash_b,
    },
    "grid": protocol.grid,
    "rows": list(done.values()),
  }
  record["resolved"] = {"eval_batch_size": settings.eval_batch}  # what `auto` settings became here
  tracker = hydra.utils.instantiate(settings.logger)
  tracker.start(config, output_dir, name=output_dir.name)
  exit_code = 1
  try:
    for seed in settings.seeds:
      for name, factory in models.items():
        for regime in settings.pretrain_regimes:
          modes = settings.modes_for(regime)
          keys = [(name, regime, mode, seed) for mode in modes]
          if all(k in done for k in keys):
            continue
          source, a_before, meta = None, None, {}
          if regime != "scratch":
            source, meta = protocol.pretrained(name, factory, regime, seed)
            a_before = (
              None if regime == "imagenet" else protocol.location_map(protocol.predictor(source), protocol.test_a)
            )
          new = [key for key in keys if key not in done]
          for mode, key in zip(modes, keys):
            if key in done:
              continue
            row = protocol.finetune_row(name, factory, regime, mode, seed, source, a_before)
            if "weights" in meta:  # the imagenet regime: which file, by content (the key holds its sha256)
              row["pretrain_weights"] = meta["weights"]
              protocol.rekey(row, {"pretrain.weights.sha256": meta["weights"]["sha256"]})
            done[key] = row
            fill_invariance_lost(done)
            record["rows"] = list(done.values())
            results.write_json(results_path, record)
            log.info(
              "%s/%s/%s seed %d: in %.3f off %.3f invariance %s",
              name,
              regime,
              mode,
              seed,
              row["in_acc"],
              row["off_acc"],
              _fmt(row["invariance"]),
            )
          for key in new:  # once the set is done: `invariance_lost` needs its last and full rows
            tracker.log_row(done[key], output_dir / done[key]["heatmap"])
    board = leaderboard.write_leaderboard(leaderboard.annotate(record), output_dir)
    print(f"\n{terminal.summary(board, output_dir)}\n", flush=True)
    tracker.log_table(
      board.columns, board.rows, {n: output_dir / f"{n}.png" for n in ("location_maps", "forgetting_curves")}
    )
    tracker.log_table(claims.COLUMNS, claims.table(board.claims), key="claims")
    tracker.log_table(*tidy.table(leaderboard.annotate(record)), key="rows", as_text=False)
    exit_code = 0
  finally:
    tracker.finish(exit_code)
  return record
