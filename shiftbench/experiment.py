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
import jax.numpy as jnp
import numpy as np
from flax import nnx
from omegaconf import DictConfig, OmegaConf

from shiftbench import (canvas, claims, compile_cache, evaluation, evaluators, leaderboard, metrics, models, plots,
                        preflight, pretrained, results, train)
from shiftbench.data import ObjectSet, require_task, resize_objects
from shiftbench.errors import CacheError, DataError
from shiftbench.settings import Settings

log = logging.getLogger(__name__)
ModelFactory = Callable[..., nnx.Module]


class Protocol:
  """Holds the data on the device and the grid; runs pretraining, fine-tuning and evaluation."""

  def __init__(self, cfg: DictConfig, settings: Settings, data_a: ObjectSet, data_b: ObjectSet,
               output_dir: Path):
    self.cfg, self.s, self.output_dir = cfg, settings, output_dir
    self.data_a, self.data_b = data_a, data_b
    self.train_a, self.test_a = _device_splits(data_a, settings.max_objects)
    self.train_b, self.test_b = _device_splits(data_b, settings.max_objects)
    self.curve_b = train.DeviceObjects(self.test_b.images[:settings.curve_objects],
                                       self.test_b.labels[:settings.curve_objects], data_b.num_classes)
    self.grid = canvas.location_grid(settings.spec, settings.grid_stride, include=settings.finetune_location)
    # Optimisers are built once per phase so the jitted steps are cached across rows (no retrace).
    self.pretrain_tx = hydra.utils.instantiate(cfg.pretrain.optimizer)
    self.finetune_tx = hydra.utils.instantiate(cfg.finetune.optimizer)
    self.evaluators = evaluators.build(cfg.eval.get("metrics"))
    # Shift metrics before fine-tuning for the latest (model, regime, seed): every mode shares them,
    # and rows run in that order, so one entry is all that is ever reused.
    self._before: dict[tuple, dict[str, Any]] = {}

  # -- evaluation ---------------------------------------------------------------------------------
  def location_map(self, model: nnx.Module, objects: train.DeviceObjects) -> dict[str, Any]:
    stats = evaluation.location_stats(model, objects.images, objects.labels, self.grid, self.s.spec.canvas_size,
                                      self.s.eval_batch)  # reduced on the device: no (L, N) predictions
    acc = stats.accuracy()
    summary = metrics.summarize_location_map(acc, self.grid, self.s.finetune_location, 0, objects.num_classes,
                                             num_objects=len(objects))
    return {"acc": acc, "everywhere": stats.everywhere, **{k: float(v) for k, v in summary.items()}}

  def shift_metrics(self, model: nnx.Module, seed: int, everywhere: np.ndarray | None = None,
                    before: bool = False) -> dict[str, Any]:
    """Every configured evaluator (`eval.metrics`) on B's test objects; reuses the map's worst-case flags."""
    ctx = evaluators.EvalContext(self.s.spec, self.grid, self.s.finetune_location, radius=0,
                                 batch_size=self.s.eval_batch, seed=seed, map_everywhere=everywhere)
    return evaluators.run_all(self.evaluators, model, self.test_b, ctx, before=before)

  # -- models -------------------------------------------------------------------------------------
  def build(self, factory: ModelFactory, num_classes: int, seed: int) -> nnx.Module:
    return factory(num_classes=num_classes, canvas_size=self.s.spec.canvas_size,
                   in_channels=self.data_a.object_shape[-1], rngs=nnx.Rngs(seed))

  def pretrained(self, name: str, factory: ModelFactory, model_cfg: DictConfig, regime: str,
                 seed: int) -> tuple[nnx.Module, dict[str, Any]]:
    """The model pretrained on A under `regime`, restored from the shared cache or trained now."""
    s = self.s
    if regime == "imagenet":  # torchvision's ImageNet weights instead of pretraining on A (classifier: A's, new)
      model = self.build(factory, self.data_a.num_classes, seed)
      weights = models.torchvision_weights.weights_for(s.pretrain_weights, name)
      return model, {"weights": models.torchvision_weights.load_imagenet(model, weights)}
    placement = train.Placement(regime, s.pretrain_location, s.pretrain_jitter)
    path, description = checkpoint_of(self.cfg, s, name, model_cfg, regime, seed)
    model = self.build(factory, self.data_a.num_classes, seed)
    if pretrained.exists(path):
      log.info("restoring pretrained %s/%s seed %d from %s", name, regime, seed, path)
      try:
        return model, pretrained.restore(path, model)
      except CacheError as e:  # bad bytes are never used: the checkpoint is made again
        pretrained.discard(path, e)
        model = self.build(factory, self.data_a.num_classes, seed)
    start = time.perf_counter()
    history = train.train(model, self.pretrain_tx, self.train_a, s.spec, placement, steps=s.pretrain.steps,
                          batch_size=s.pretrain.batch_size, seed=seed, dispatch=s.pretrain.dispatch,
                          desc=f"pretrain {name}/{regime}/s{seed}")
    meta = {"description": description, "history": history, "seconds": time.perf_counter() - start}
    pretrained.save(path, model, meta)
    return model, meta

  # -- one row ------------------------------------------------------------------------------------
  def finetune_row(self, name: str, factory: ModelFactory, regime: str, mode: str, seed: int,
                   source: nnx.Module | None, a_before: dict[str, Any] | None) -> dict[str, Any]:
    s = self.s
    model = self.build(factory, self.data_b.num_classes, seed + 1)
    if source is not None:
      # Backbone and hidden FC layers carry over (copied: training donates its buffers); only the
      # classifier is new, sized for B's classes.
      models.transfer(source, model)
    curve: list[dict[str, Any]] = []
    eval_start = time.perf_counter()
    # Pretrained layers + fresh classifier: the same for every fine-tune mode, so computed once per row set.
    key = (name, regime, seed)
    if key not in self._before:
      self._before = {key: self.shift_metrics(model, seed, before=True)}
    before = self._before[key]
    eval_seconds = time.perf_counter() - eval_start

    def on_eval(step: int, m: nnx.Module):
      point = self.location_map(m, self.curve_b)
      curve.append({"step": step, **{k: point[k] for k in ("in_acc", "off_acc", "invariance", "in_pvalue")}})

    start = time.perf_counter()
    until = None if s.until_accuracy is None else train.UntilAccuracy(*s.until_accuracy)
    history = train.train(model, self.finetune_tx, self.train_b, s.spec,
                          train.Placement("fixed", s.finetune_location), steps=s.finetune.steps,
                          batch_size=s.finetune.batch_size, seed=seed, mode=mode, dispatch=s.finetune.dispatch,
                          eval_every=s.eval_every, on_eval=on_eval,
                          desc=f"finetune {name}/{regime}/{mode}/s{seed}", until=until)
    stop = {"rule": "steps", "step": s.finetune.steps} if until is None or until.stopped_at is None else {
        "rule": "until_accuracy", "step": until.stopped_at, "threshold": until.threshold, "patience": until.patience}
    train_seconds = time.perf_counter() - start
    final = self.location_map(model, self.test_b)
    eval_start = time.perf_counter()
    shift = self.shift_metrics(model, seed, final["everywhere"])
    eval_seconds += time.perf_counter() - eval_start
    a_after = None
    if source is not None and a_before is not None:  # (no A map for ImageNet weights: A is not their task)
      if mode == "last":  # only B's classifier trained: A's network is exactly the one before
        a_after = a_before
      else:
        a_model = nnx.clone(source)  # A's classifier on the fine-tuned layers; `source` stays pretrained
        nnx.update(a_model, nnx.state(model, models.TRANSFERABLE))
        a_after = self.location_map(a_model, self.test_a)
    ys, xs = canvas.grid_axes(self.grid)
    acc2d = final["acc"].reshape(len(ys), len(xs))
    heatmap = plots.save_location_map(
        self.output_dir / "heatmaps" / f"{name}_{regime}_{mode}_s{seed}.png", acc2d, ys, xs,
        1.0 / self.data_b.num_classes, s.finetune_location,
        f"{name} | pretrain {regime} | {mode} | seed {seed}\ninvariance {_fmt(final['invariance'])}")
    return {
        "model": name, "pretrain": regime, "finetune": mode, "seed": seed,
        "in_acc": final["in_acc"], "off_acc": final["off_acc"], "invariance": final["invariance"],
        "in_pvalue": final["in_pvalue"], "test_objects": len(self.test_b),
        "chance": 1.0 / self.data_b.num_classes, "finetune_steps": stop["step"], "finetune_stop": stop,
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
        "params": models.param_count(model), **shift, **before, "eval_seconds": eval_seconds,
        "train_final": history[-1] if history else None, "finetune_seconds": train_seconds,
        "heatmap": str(heatmap.relative_to(self.output_dir)),
    }


def checkpoint_of(cfg: DictConfig, s: Settings, name: str, model_cfg: DictConfig, regime: str,
                  seed: int) -> tuple[Path, dict[str, Any]]:
  """Where the model pretrained under `regime` is cached, and everything that determines it."""
  placement = train.Placement(regime, s.pretrain_location, s.pretrain_jitter)
  description = {
      "model": OmegaConf.to_container(model_cfg), "data": OmegaConf.to_container(cfg.data.pretrain),
      "canvas": [s.spec.canvas_size, s.spec.object_size], "placement": [regime, *placement.location,
                                                                       placement.jitter],
      "steps": s.pretrain.steps, "batch_size": s.pretrain.batch_size,
      "optimizer": OmegaConf.to_container(cfg.pretrain.optimizer), "seed": seed,
  }
  return pretrained.checkpoint_path(cfg.paths.checkpoint_dir, f"{name}-{regime}-s{seed}", description), description


def check_cache_writable(cfg: DictConfig, s: Settings, done: dict[tuple, Any]) -> None:
  """Fails now, not after pretraining, if a checkpoint this run must save cannot be written (a read-only
  cache that already holds every needed checkpoint is fine)."""
  for seed in s.seeds:
    for name, mcfg in cfg.model.items():
      for regime in s.pretrain_regimes:
        if regime in ("scratch", "imagenet") or all((name, regime, mode, seed) in done for mode in s.modes_for(regime)):
          continue
        if not pretrained.exists(checkpoint_of(cfg, s, name, mcfg, regime, seed)[0]):
          preflight.check_writable(cfg.paths.checkpoint_dir, "checkpoint cache (paths.checkpoint_dir)",
                                   "set $SHIFTBENCH_CACHE or paths.checkpoint_dir to a writable directory")
          return


def fill_invariance_lost(rows: dict[tuple, dict[str, Any]]) -> None:
  """invariance(last) - invariance(full) per model x pretrain x seed (the forgetting result: what the
  pretrained representation carried, minus what survives training everything at one location), written
  into both rows."""
  for (name, regime, mode, seed), row in rows.items():
    last, full = rows.get((name, regime, "last", seed)), rows.get((name, regime, "full", seed))
    if last and full and _defined(last["invariance"]) and _defined(full["invariance"]):
      row["invariance_lost"] = last["invariance"] - full["invariance"]


def _defined(value: Any) -> bool:
  return value is not None and bool(np.isfinite(value))


def _fmt(value: float | None) -> str:
  """A score for a title or log line; `-` when undefined (in-location accuracy not above chance)."""
  return f"{value:.3f}" if _defined(value) else "-"


def _device_splits(objs: ObjectSet, max_test: int | None) -> tuple[train.DeviceObjects, train.DeviceObjects]:
  test_images, test_labels = objs.test_images, objs.test_labels
  if max_test is not None:
    test_images, test_labels = test_images[:max_test], test_labels[:max_test]
  return (train.DeviceObjects.from_numpy(objs.train_images, objs.train_labels, objs.num_classes),
          train.DeviceObjects.from_numpy(test_images, test_labels, objs.num_classes))


def load_datasets(cfg: DictConfig, object_size: int) -> tuple[ObjectSet, ObjectSet]:
  """Instantiates datasets A and B from config and resizes their objects to `object_size`."""
  data_a = resize_objects(hydra.utils.instantiate(cfg.data.pretrain), object_size)
  data_b = resize_objects(hydra.utils.instantiate(cfg.data.finetune), object_size)
  require_task(data_a, "A (data.pretrain)")
  require_task(data_b, "B (data.finetune)")
  if data_a.object_shape[-1] != data_b.object_shape[-1]:
    raise DataError(f"datasets A ({data_a.name}) and B ({data_b.name}) have different channel counts: "
                     f"{data_a.object_shape[-1]} vs {data_b.object_shape[-1]}")
  return data_a, data_b


def run_experiment(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
  """Runs every row of the configured protocol and writes results, heatmaps and the leaderboard."""
  preflight.check_config(cfg)
  output_dir = preflight.check_writable(output_dir, "run directory", "choose another hydra.run.dir")
  compile_cache.configure(cfg.get("compile_cache", False), cfg.paths.get("compile_cache_dir"))
  settings = Settings.from_config(cfg)
  models = {name: (hydra.utils.instantiate(mcfg), mcfg) for name, mcfg in cfg.model.items()}
  config = OmegaConf.to_container(cfg, resolve=True)
  results_path = output_dir / "results.json"
  done = preflight.resumable_rows(results_path, config, bool(cfg.get("overwrite", False)))
  check_cache_writable(cfg, settings, done)
  data_a, data_b = load_datasets(cfg, settings.spec.object_size)
  protocol = Protocol(cfg, settings, data_a, data_b, output_dir)
  record = {"config": config, "seeds": list(settings.seeds), "environment": results.environment(),
            "datasets": {"pretrain": data_a.name, "finetune": data_b.name}, "grid": protocol.grid,
            "rows": list(done.values())}
  record["resolved"] = {"eval_batch_size": settings.eval_batch}  # what `auto` settings became here
  tracker = hydra.utils.instantiate(cfg.logger)
  tracker.start(config, output_dir, name=output_dir.name)
  exit_code = 1
  try:
    for seed in settings.seeds:
      for name, (factory, mcfg) in models.items():
        for regime in settings.pretrain_regimes:
          modes = settings.modes_for(regime)
          keys = [(name, regime, mode, seed) for mode in modes]
          if all(k in done for k in keys):
            continue
          source, a_before, meta = None, None, {}
          if regime != "scratch":
            source, meta = protocol.pretrained(name, factory, mcfg, regime, seed)
            a_before = None if regime == "imagenet" else protocol.location_map(source, protocol.test_a)
          for mode, key in zip(modes, keys):
            if key in done:
              continue
            row = protocol.finetune_row(name, factory, regime, mode, seed, source, a_before)
            if "weights" in meta:  # the imagenet regime: which file, by content
              row["pretrain_weights"] = meta["weights"]
            done[key] = row
            fill_invariance_lost(done)
            record["rows"] = list(done.values())
            results.write_json(results_path, record)
            tracker.log_row(row, output_dir / row["heatmap"])
            log.info("%s/%s/%s seed %d: in %.3f off %.3f invariance %s", name, regime, mode, seed,
                     row["in_acc"], row["off_acc"], _fmt(row["invariance"]))
    board = leaderboard.write_leaderboard(leaderboard.annotate(record), output_dir)
    print(f"\n{board.markdown}\n\nClaims from the literature (shiftbench.claims):\n{board.claims_markdown}\n",
          flush=True)
    tracker.log_table(board.columns, board.rows, {n: output_dir / f"{n}.png"
                                                  for n in ("location_maps", "forgetting_curves")})
    tracker.log_table(claims.COLUMNS, claims.table(board.claims), key="claims")
    exit_code = 0
  finally:
    tracker.finish(exit_code)
  return record
