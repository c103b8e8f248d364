"""One protocol's machinery for a run: the data on the device, the test grid, and what one row does
(pretrained model, fine-tuning by the row's method, location maps, shift metrics, the row itself), with what
the rows of one plan group share kept exactly as long as the group runs (docs/protocol.md).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from shiftbench import evaluators, methods, models
from shiftbench.data import ObjectSet, canvas, streams
from shiftbench.data.device import DeviceObjects
from shiftbench.evaluators import location_maps as evaluation
from shiftbench.evaluators import metrics
from shiftbench.evaluators.predictor import Predictor
from shiftbench.methods import Finetuned
from shiftbench.models import published_weights, torchvision_weights
from shiftbench.reporting import plots
from shiftbench.rows import comparison, per_object, schema
from shiftbench.rows.schema import RowId
from shiftbench.runs import plan, pretraining, protocol_data, targets
from shiftbench.runs.settings import Settings
from shiftbench.runs.shared import Shared, probe_point
from shiftbench.training import batchnorm, checkpoints, programs
from shiftbench.training import loop as train
from shiftbench.training.step import Placement
from shiftbench.training.stopping import UntilAccuracy

log = logging.getLogger(__name__)

# Batches BatchNorm statistics are re-estimated on (`Protocol.recalibrate`): at the default batch of 64,
# 3200 canvases, about 70% of one pass over the glyphs' B training split; each channel's mean and variance
# is then an average of 50 batch estimates, so their sampling spread is about 1/7 of one batch's.
RECALIBRATION_BATCHES = 50


class Protocol:
  """Holds the data on the device and the grid; runs pretraining, fine-tuning and evaluation."""

  def __init__(self, settings: Settings, data_a: ObjectSet, data_b: ObjectSet, output_dir: Path):
    self.s, self.output_dir = settings, output_dir
    self.data_a, self.data_b = data_a, data_b
    self.hash_a, self.hash_b = protocol_data.dataset_hash(data_a), protocol_data.dataset_hash(data_b)
    self.train_a, self.test_a = protocol_data.device_splits(data_a, settings)
    # B's validation objects are what rates are chosen on, never test.
    self.train_b, self.test_b, self.val_b = protocol_data.splits_b(data_b, settings)
    # Every evaluation subset is a prefix of one class-balanced order (`subsets.balanced_order`).
    self.curve_b = DeviceObjects(
      self.test_b.images[: settings.curve_objects], self.test_b.labels[: settings.curve_objects], data_b.num_classes
    )
    self.grid = canvas.location_grid(settings.spec, settings.grid_stride, include=settings.finetune_location)
    self.finetune_index = int(metrics.location_index(self.grid, settings.finetune_location))  # in `self.grid`
    self.protocol = comparison.protocol_settings(settings.config, {"pretrain": self.hash_a, "finetune": self.hash_b})
    # What the rows of each plan group now running share (`plan`), open only while it runs, by group key
    # (several groups run at once with `row_threads`): the shift metrics before fine-tuning of a (model,
    # regime, seed), shared by every mode, rate and method; and the plain rows' fine-tuned models of a
    # (model, regime, rate, seed), what LP-FT, WiSE-FT and a user's method start from.
    self._before: dict[tuple, Shared] = {}
    self._tuned: dict[tuple, Shared] = {}
    self.weights_cache = published_weights.cache_dir(settings.checkpoint_dir)  # named ImageNet weights
    # A user's model is checked against the model protocol once, on abstract shapes, before anything trains.
    targets.check_models(
      settings.factories, settings.models, data_b.num_classes, settings.spec.canvas_size, data_a.object_shape[-1]
    )

  # -- evaluation ---------------------------------------------------------------------------------
  def predictor(self, model: nnx.Module) -> Predictor:
    """`model` in eval mode for every evaluation of its current state (made again after it trains)."""
    return Predictor(model, self.s.spec.canvas_size)

  def location_map(self, predictor: Predictor, objects: DeviceObjects) -> dict[str, Any]:
    stats = evaluation.location_stats(
      predictor, objects.images, objects.labels, self.grid, self.s.eval_batch, at=self.finetune_index
    )  # reduced on the device: no (L, N) predictions
    acc = stats.accuracy()
    summary = metrics.summarize_location_map(
      acc, self.grid, self.s.finetune_location, 0, objects.num_classes, num_objects=len(objects)
    )
    return {
      "acc": acc,
      "everywhere": stats.everywhere,
      "distinct_predictions": int(stats.predicted.sum()),
      "per_object": (stats.off_correct, stats.in_correct, len(self.grid) - 1),  # G_off: every other location
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
    return evaluators.run_all(self.s.evaluators, predictor, self.test_b, ctx, before=before)

  # -- models -------------------------------------------------------------------------------------
  def build(self, name: str, num_classes: int, key: jax.Array) -> nnx.Module:
    return self.s.factories[name](
      num_classes=num_classes,
      canvas_size=self.s.spec.canvas_size,
      in_channels=self.data_a.object_shape[-1],
      rngs=nnx.Rngs(key),
    )

  def pretrained(self, name: str, regime: str, seed: int) -> tuple[nnx.Module, dict[str, Any]]:
    """The model pretrained on A under `regime`, restored from the shared cache or trained now."""
    build = lambda: self.build(name, self.data_a.num_classes, streams.stream(seed, streams.PRETRAIN_INIT))
    if regime == "imagenet":  # torchvision's ImageNet weights instead of pretraining on A (classifier: A's, new)
      model = build()
      weights, source = torchvision_weights.weights_for(self.s.pretrain_weights, name, model.arch, self.weights_cache)
      return model, {"weights": torchvision_weights.load_imagenet(model, weights, source)}
    return pretraining.pretrained_model(self.s, name, regime, seed, build, self.train_a, self.hash_a)

  def compile_ahead(self, done: Collection[RowId] = ()) -> None:
    """Starts compiling the training programs of the rows not in `done`, in the order they are first
    needed, on a background thread (`programs.compile_ahead`): each model's plain fine-tuning in each mode
    (one program for every rate, `training.optimizers`) and its pretraining where the checkpoint is not
    cached. XLA compiles on one thread, so on a machine with a core to spare the run no longer waits
    for them; the programs, so the numbers, are the ones `jit` would build."""
    s, ahead = self.s, []
    for group in plan.groups(s):
      new = [rid for rid in group.rows if rid not in done]
      if not new:
        continue
      if group.regime not in ("scratch", "imagenet"):
        path, _ = pretraining.checkpoint_of(s, group.model, group.regime, group.seed, self.hash_a)
        if not checkpoints.exists(path):
          ahead.append(("pretrain", group.model, group.regime))
      ahead += [("finetune", rid.model, rid.finetune) for rid in new if rid.finetune_method == schema.PLAIN]
    models_of: dict[tuple[str, int], nnx.Module] = {}
    for phase, name, what in dict.fromkeys(ahead):
      data = self.train_a if phase == "pretrain" else self.train_b
      shapes = (name, data.num_classes)
      if shapes not in models_of:  # its shapes only: nothing is initialised
        models_of[shapes] = nnx.eval_shape(lambda n=name, k=data.num_classes: self.build(n, k, jax.random.key(0)))
      model = models_of[shapes]
      if phase == "pretrain":
        placement = Placement(what, s.pretrain_location, s.pretrain_jitter)
        tx, mode, stream, evals = s.transforms["pretrain"], "full", streams.PRETRAIN_BATCHES, {}
      else:
        placement = Placement("fixed", s.finetune_location)
        tx, mode, stream = next(iter(s.transforms["finetune"].values())), what, streams.FINETUNE_BATCHES
        evals = {"evaluate": True, "eval_every": s.eval_every, "eval_steps": s.curve_steps}
      phase_settings = s.pretrain if phase == "pretrain" else s.finetune
      programs.compile_ahead(
        model,
        tx,
        data,
        s.spec,
        placement,
        steps=phase_settings.steps,
        batch_size=phase_settings.batch_size,
        seed=streams.stream(0, stream),
        mode=mode,
        dispatch=phase_settings.dispatch,
        **evals,
      )

  # -- one row ------------------------------------------------------------------------------------
  def start(self, rid: RowId, source: nnx.Module | None) -> nnx.Module:
    """B's model before fine-tuning. Its own stream: the same classifier start for every regime and mode
    of a seed (paired comparisons), never pretraining's weights. The backbone and hidden FC layers carry
    over from `source` (copied: training donates its buffers); only the classifier is new, for B's classes."""
    model = self.build(rid.model, self.data_b.num_classes, streams.stream(rid.seed, streams.FINETUNE_INIT))
    if source is not None:
      models.transfer(source, model)
    return model

  def open_group(self, group: plan.Pretrained) -> None:
    """Starts the rows of `group` (one pretrained model): their shift metrics before fine-tuning are
    measured once, by the first row that runs, and dropped at `close_group`."""
    self._before[group.key] = Shared(group.key)

  def close_group(self, group: plan.Pretrained) -> None:
    self._before.pop(group.key, None)

  @contextlib.contextmanager
  def rows_of(self, group: plan.Pretrained) -> Iterator[None]:
    """Runs rows of `group` between `open_group` and `close_group`."""
    self.open_group(group)
    try:
      yield
    finally:
      self.close_group(group)

  @contextlib.contextmanager
  def rows_at(self, group: plan.AtRate) -> Iterator[None]:
    """Runs rows of `group` (one rate): its plain rows' fine-tuned models are kept for the method rows
    after them, and dropped when the group ends."""
    self._tuned[group.key] = Shared(group.key)
    try:
      yield
    finally:
      self._tuned.pop(group.key, None)

  def before(self, rid: RowId, fresh) -> dict[str, Any]:
    """Shift metrics of the pretrained layers + fresh classifier (`fresh()`): the same for every
    fine-tune mode and method; measured by the first row of the group to ask (the others, on other
    threads, wait for it)."""
    shared = Shared.of(self._before, plan.pretrained_key(rid), "shift metrics before fine-tuning", "rows_of")
    with shared.lock:
      if "before" not in shared:
        shared["before"] = self.shift_metrics(self.predictor(fresh()), rid.seed, before=True)
    return shared["before"]

  def validation(self, predictor: Predictor, whole_map: bool) -> tuple[float | None, float | None]:
    """In-location accuracy and (with `whole_map`: every method's row, whose setting is chosen by both)
    invariance on B's validation objects: what a setting (a rate, L2-SP's beta) is chosen by."""
    if self.val_b is None:
      return None, None
    if whole_map:  # in-location accuracy read off the map, as the one-location path computes it
      point = self.location_map(predictor, self.val_b)
      return float(point["acc"][self.finetune_index]), point["invariance"]
    loc = np.asarray([self.s.finetune_location], np.int32)
    stats = evaluation.location_stats(predictor, self.val_b.images, self.val_b.labels, loc, self.s.eval_batch)
    return float(stats.accuracy()[0]), None

  def finetune(
    self,
    rid: RowId,
    model: nnx.Module,
    probe: dict[str, Any] | None = None,
    tx: Any = None,
    mode: str | None = None,
    replay: Any = None,
    steps: int | None = None,
    curve: bool = True,
  ) -> Finetuned:
    """Trains `model` in place on B at the fine-tune location at `mode` (the row's by default) with `tx`
    (the row's optimiser by default), evaluating the curve along the way. The curve's step 0 is `probe`
    where given (the `last` row's final point: the pretrained backbone read by a trained linear
    classifier, what `head` and `full` start from in representation), else the model as it starts (a
    fresh classifier: chance). `steps`: a budget of its own instead of the row's, trained to the end (no
    stopping rule); `curve=False` evaluates nothing along the way (a stage a row does not report)."""
    s = self.s
    points: list[dict[str, Any]] = []

    def on_eval(step: int, m: nnx.Module):
      if step == 0 and probe is not None:
        points.append({**probe, "step": 0, "from": "probe"})
        return
      point = self.location_map(self.predictor(m), self.curve_b)
      points.append({"step": step, **{k: point[k] for k in schema.CURVE_FIELDS}})

    start = time.perf_counter()
    until = None if s.until_accuracy is None or steps is not None else UntilAccuracy(*s.until_accuracy)
    budget = s.finetune.steps if steps is None else int(steps)
    history = train.train(
      model,
      tx or s.transforms["finetune"][rid.finetune_lr],
      self.train_b,
      s.spec,
      Placement("fixed", s.finetune_location),
      steps=budget,
      batch_size=s.finetune.batch_size,
      seed=streams.stream(rid.seed, streams.FINETUNE_BATCHES),
      mode=mode or rid.finetune,
      dispatch=s.finetune.dispatch,
      eval_every=s.eval_every,
      eval_steps=s.curve_steps,
      on_eval=on_eval if curve else None,
      desc=f"finetune {rid.name()}",
      until=until,
      replay=replay,
    )
    # Which rule ended training, and where: the rule's own record when it fired, else the cap.
    stop = {"rule": "steps", "step": budget}
    if until is not None:
      stop = (
        {**until.record(), "step": until.stopped_at}
        if until.stopped_at is not None
        else {**stop, "cap_of": until.record()}
      )
    return Finetuned(model, points, history, stop, time.perf_counter() - start)

  def pretrain_task_after(
    self, rid: RowId, source: nnx.Module | None, model: nnx.Module, a_before: dict[str, Any] | None
  ) -> dict[str, Any] | None:
    """A's location map with A's classifier on the fine-tuned layers (None for ImageNet weights: A is
    not their task). After `last` only B's classifier trained, so A's network is exactly the one before."""
    if source is None or a_before is None:
      return None
    if rid.finetune == "last" and rid.finetune_method == schema.PLAIN:
      return a_before
    a_model = nnx.clone(source)  # `source` stays pretrained for the next mode
    nnx.update(a_model, nnx.state(model, models.TRANSFERABLE))
    return self.location_map(self.predictor(a_model), self.test_a)

  def heatmap(self, rid: RowId, final: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """The final location map as a (ys, xs, acc) record and its PNG under `heatmaps/`."""
    ys, xs = canvas.grid_axes(self.grid)
    acc2d = final["acc"].reshape(len(ys), len(xs))
    mode = rid.finetune if rid.finetune_method == schema.PLAIN else f"{rid.finetune} {rid.method_label}"
    lr = f"lr {schema.format_lr(rid.finetune_lr)}"
    title = " | ".join([rid.model, f"pretrain {rid.pretrain}", mode, lr, f"seed {rid.seed}"])
    path = plots.save_location_map(
      self.output_dir / "heatmaps" / f"{rid.name('_')}.png",
      acc2d,
      ys,
      xs,
      1.0 / self.data_b.num_classes,
      self.s.finetune_location,
      f"{title}\ninvariance {score_text(final['invariance'])}",
    )
    return {"ys": ys, "xs": xs, "acc": acc2d}, path

  def context(
    self, rid: RowId, source: nnx.Module | None, point: dict[str, Any] | None, done: dict[RowId, dict[str, Any]]
  ) -> methods.Context:
    """What row `rid`'s method may start from (`methods.Context`); `point` is the `last` row's final
    curve point, or None (then the curve's step 0 is measured)."""

    def finetune(
      model: nnx.Module, tx: Any = None, mode: str = "full", probe: bool = False, replay=None, steps=None, curve=True
    ):
      return self.finetune(
        rid, model, point if probe else None, tx=tx, mode=mode, replay=replay, steps=steps, curve=curve
      )

    pretraining = None
    if source is not None and rid.pretrain != "imagenet":  # A is the task of the model it starts from
      at = Placement(rid.pretrain, self.s.pretrain_location, self.s.pretrain_jitter)
      key = streams.stream(rid.seed, streams.FROM_PRETRAINING)
      pretraining = methods.Pretraining(lambda: methods.copy_model(source), self.train_a, at, self.s.spec, key)
    return methods.Context(
      fresh=lambda: self.start(rid, source),
      tuned=lambda mode: methods.copy_model(self.tuned(rid.plain_sibling(mode), source, done)),
      tx=self.s.transforms["finetune"][rid.finetune_lr],
      finetune=finetune,
      mode=rid.finetune,
      pretraining=pretraining,
      rates=tuple(sorted(self.s.finetune_rates)),
      tuned_at=lambda mode, rate: methods.copy_model(self.tuned_at(rid, mode, rate, source, done)),
      rate=rid.finetune_lr,
      at_rate=self.s.transforms["finetune"].at,
      once=lambda name, fn: self.once(rid, name, fn),
      validate=lambda model: self.validation(self.predictor(model), whole_map=False)[0],
      recalibrate=lambda model: self.recalibrate(rid, model),
    )

  def once(self, rid: RowId, name: str, compute: Callable[[], Any]) -> Any:
    """`compute()`'s value, computed by the first row of `rid`'s pretrained group (model, regime, seed) to
    ask for `name` and shared with every other row of it, whatever its rate or thread (`Shared.once`)."""
    shared = Shared.of(self._before, plan.pretrained_key(rid), f"what is computed once ({name!r})", "rows_of")
    return shared.once(name, compute)

  def recalibrate(self, rid: RowId, model: nnx.Module) -> nnx.Module:
    """`model` with its BatchNorm running statistics re-estimated on B's training objects at the
    fine-tune location: the first `RECALIBRATION_BATCHES` batches of the row's fine-tune stream, in train
    mode, a plain average (`training.batchnorm`); `model` itself without BatchNorm."""
    return batchnorm.reestimate(
      model,
      self.train_b,
      self.s.spec,
      Placement("fixed", self.s.finetune_location),
      batch_size=self.s.finetune.batch_size,
      seed=streams.stream(rid.seed, streams.FINETUNE_BATCHES),
      batches=RECALIBRATION_BATCHES,
    )

  def tuned_at(
    self, rid: RowId, mode: str, rate: float, source: nnx.Module | None, done: dict[RowId, dict[str, Any]]
  ) -> nnx.Module:
    """The fine-tuned model of the plain row at `mode` and `rate` of `rid`'s model, regime and seed, for a
    method across rates (`Method.across_rates`): kept by its group where it is still open, or by the
    pretrained model's group (`_keep`), else trained again (the same stream and budget: the same model)."""
    sibling = rid.plain_sibling(mode)._replace(finetune_lr=rate)
    if sibling.finetune not in plan.modes_for(self.s, rid.pretrain, rid.model) or rate not in self.s.finetune_rates:
      raise ValueError(f"{sibling.name()} does not run in this experiment: no model to start from")
    across = self._before.get(plan.pretrained_key(sibling), {})
    kept = self._tuned.get(plan.rate_key(sibling), {}).get(sibling)
    kept = across.get(sibling) if kept is None else kept
    if kept is None:
      log.info("%s: trained again for the methods across rates (its row is kept)", sibling.name())
      ctx = self.context(sibling, source, probe_point(sibling, done), done)
      kept = across[sibling] = self.s.methods[schema.PLAIN].run(ctx, None).model
    return kept

  def tuned(self, rid: RowId, source: nnx.Module | None, done: dict[RowId, dict[str, Any]]) -> nnx.Module:
    """The fine-tuned model of plain row `rid`, kept from when it ran; in a resumed run whose row was
    written before, trained again (the same stream and budget: the same model) without rewriting it."""
    tuned = Shared.of(self._tuned, plan.rate_key(rid), "a plain row's fine-tuned model", "rows_at")
    if rid not in tuned:
      if rid.finetune not in plan.modes_for(self.s, rid.pretrain, rid.model) or schema.PLAIN not in self.s.methods:
        raise ValueError(f"{rid.name()} does not run in this experiment: no model to start from")
      log.info("%s: trained again for the methods that start from it (its row is kept)", rid.name())
      ctx = self.context(rid, source, probe_point(rid, done), done)
      self._keep(rid, self.s.methods[schema.PLAIN].run(ctx, None).model)
    return tuned[rid]

  def _keep(self, rid: RowId, model: nnx.Module) -> None:
    Shared.of(self._tuned, plan.rate_key(rid), "a plain row's fine-tuned model", "rows_at")[rid] = model
    if any(m.across_rates for m in self.s.methods.values()) and plan.pretrained_key(rid) in self._before:
      self._before[plan.pretrained_key(rid)][rid] = model  # for the rows across rates, after every rate

  def row(
    self,
    rid: RowId,
    source: nnx.Module | None,
    a_before: dict[str, Any] | None,
    probe: dict[str, Any] | None = None,
    done: dict[RowId, dict[str, Any]] | None = None,
    weights: dict[str, Any] | None = None,
  ) -> dict[str, Any]:
    """Fine-tunes (by the row's method) and evaluates one row, built through its declaration (`schema.ROW`:
    its fields, in `results.json` order). `weights` are the imagenet regime's weights file (its sha256
    joins the row's settings, so its keys)."""
    s = self.s
    method = s.methods[rid.finetune_method]
    ctx = self.context(rid, source, probe, done or {})
    eval_start = time.perf_counter()
    before = self.before(rid, ctx.fresh)
    eval_seconds = time.perf_counter() - eval_start
    tuned = methods.as_finetuned(method.run(ctx, rid.method_setting), method.name)
    model = tuned.model
    if rid.finetune_method == schema.PLAIN:
      self._keep(rid, model)
    trained = self.predictor(model)  # the fine-tuned state: one for its map and its shift metrics
    final = self.location_map(trained, self.test_b)
    val_in_acc, val_invariance = self.validation(trained, whole_map=rid.finetune_method != schema.PLAIN)
    eval_start = time.perf_counter()
    shift = self.shift_metrics(trained, rid.seed, final["everywhere"])
    eval_seconds += time.perf_counter() - eval_start
    a_after = self.pretrain_task_after(rid, source, model, a_before)
    location_map, heatmap = self.heatmap(rid, final)
    settings = comparison.row_settings(self.protocol, s.models[rid.model], s.method_configs.get(rid.finetune_method))
    if weights is not None:  # the imagenet regime: which file, by content (the key holds its sha256)
      settings = dict(sorted({**settings, "pretrain.weights.sha256": weights["sha256"]}.items()))
    return schema.ROW.build(
      **rid._asdict(),
      comparison_key=comparison.key_of(settings),
      protocol_key=comparison.key_of(comparison.protocol_part(settings)),
      eval_split=s.eval_split,
      **{k: final[k] for k in ("distinct_predictions", "in_acc", "off_acc", "invariance", "in_pvalue")},
      val_in_acc=val_in_acc,
      **({} if rid.finetune_method == schema.PLAIN else {"val_invariance": val_invariance}),
      test_objects=len(self.test_b),
      per_object=per_object.record(*final["per_object"]),
      chance=1.0 / self.data_b.num_classes,
      finetune_steps=tuned.stop["step"],
      finetune_stop=tuned.stop,
      input_adapter=model.input_adapter,
      finetune_location=list(s.finetune_location),
      location_map=location_map,
      curve=tuned.curve,
      **_pretrain_task_fields(a_before, a_after),
      invariance_lost=None,  # filled in once the last and full rows of this seed both exist
      params=models.param_count(model),
      shift=shift,
      shift_before=before,
      eval_seconds=eval_seconds,
      train_final=tuned.history[-1] if tuned.history else None,
      finetune_seconds=tuned.seconds,
      heatmap=str(heatmap.relative_to(self.output_dir)),
      comparison=settings,
      **({} if weights is None else {"pretrain_weights": weights}),
    )


def _pretrain_task_fields(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
  """A's own invariance and accuracies before and after fine-tuning (None where there is no A map)."""
  get = lambda m, k: None if m is None else m[k]
  return {
    "pretrain_invariance_before": get(before, "invariance"),
    "pretrain_invariance_after": get(after, "invariance"),
    "pretrain_in_acc_before": get(before, "in_acc"),
    "pretrain_off_acc_before": get(before, "off_acc"),
    "pretrain_in_acc_after": get(after, "in_acc"),
    "pretrain_off_acc_after": get(after, "off_acc"),
    "pretrain_invariance_lost": None if after is None else before["invariance"] - after["invariance"],
  }


def score_text(value: float | None) -> str:
  """A score for a title or log line; `-` when undefined (in-location accuracy not above chance)."""
  return f"{value:.3f}" if schema.defined(value) else "-"
