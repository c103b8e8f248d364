"""The experiment: pretrain on A -> fine-tune on B at one location -> location maps (docs/protocol.md).

One row (`schema.RowId`) per model x pretrain regime x fine-tune mode x method and setting x fine-tune
learning rate x seed, run group by group (`runs.plan`) through `runs.protocol.Protocol`. `results.json` is
rewritten atomically after every row, so an interrupted or requeued run resumes where it stopped and loses
nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from shiftbench.claims import catalogue as claims
from shiftbench.infra import files
from shiftbench.models import torchvision_weights
from shiftbench.reporting import leaderboard, terminal, tidy
from shiftbench.rows import collect, comparison, schema
from shiftbench.runs import compile_cache, plan, pretraining, progress, protocol_data, row_pool, run_dir
from shiftbench.runs.environment import environment
from shiftbench.runs.protocol import Protocol, score_text
from shiftbench.runs.settings import Settings
from shiftbench.runs.shared import probe_point
from shiftbench.training import programs

log = logging.getLogger(__name__)


def run_experiment(cfg: DictConfig | dict[str, Any], output_dir: str | Path) -> dict[str, Any]:
  """Runs every row of the configured protocol and writes results, heatmaps and the leaderboard.

  `cfg` is checked, resolved and built once into `Settings` (the only view of it below this line). The
  run directory is opened once (`run_dir`): one process per directory, a `locks.Busy` error at once if
  another process is running in it, and the rows a previous run with the same config left are kept.
  """
  settings = Settings.from_config(cfg)
  with run_dir.opened_run_dir(output_dir, settings.config, settings.overwrite) as opened:
    return _run(settings, opened)


def _run(settings: Settings, opened: run_dir.RunDirectory) -> dict[str, Any]:
  output_dir, done = opened.path, opened.done
  started, resumed = time.monotonic(), len(done)
  compile_cache.configure(settings.compile_cache, settings.compile_cache_dir)
  data_a, data_b = protocol_data.load_datasets(settings)
  protocol = Protocol(settings, data_a, data_b, output_dir)
  pretraining.check_cache_writable(settings, done, protocol.hash_a)
  if "imagenet" in settings.pretrain_regimes:  # named weights: downloaded (once) before any row trains
    torchvision_weights.prefetch(settings.pretrain_weights, settings.factories, protocol.weights_cache)
  record = {
    "config": settings.config,
    "seeds": list(settings.seeds),
    "environment": environment(),  # the package version among them
    "protocol_version": comparison.PROTOCOL_VERSION,  # what a resumed run checks (`run_dir`)
    "datasets": {
      "pretrain": data_a.name,
      "finetune": data_b.name,
      "pretrain_sha256": protocol.hash_a,
      "finetune_sha256": protocol.hash_b,
    },
    # How each method's rows are shown, for the tables, which import no jax (`shiftbench.rows.method_info`).
    "methods": {name: m.describe() for name, m in settings.methods.items()},
    "grid": protocol.grid,
    "rows": list(done.values()),
  }
  record["resolved"] = {"eval_batch_size": settings.eval_batch}  # what `auto` settings became here
  tracker = settings.tracker
  tracker.start(settings.config, output_dir, name=output_dir.name, group=run_dir.experiment_group(output_dir))
  exit_code = 1
  groups = plan.groups(settings)
  bar = progress.Rows(sum(len(g.rows) for g in groups), sum(rid in done for g in groups for rid in g.rows))
  order = {rid: i for i, rid in enumerate(rid for g in groups for rid in g.rows)}
  written = threading.Lock()  # rows finish on several threads (`row_threads`); one writes results.json at a time
  stop = threading.Event()

  def finished(rid: schema.RowId, row: dict[str, Any]) -> None:
    with written:
      done[rid] = row
      schema.fill_invariance_lost(done.values())
      # In plan order whichever thread finished first: the same file as a run on one thread.
      record["rows"] = sorted(done.values(), key=lambda r: order.get(schema.RowId.of(r), len(order)))
      files.write_json(opened.results_path, record)
      log.info(
        "%s: in %.3f off %.3f invariance %s (%s)",
        rid.name(),
        row["in_acc"],
        row["off_acc"],
        score_text(row["invariance"]),
        bar.advance(),
      )

  def prepare(group: plan.Pretrained) -> tuple[Any, Any, dict[str, Any]]:
    protocol.open_group(group)
    source, a_before, meta = None, None, {}
    if group.regime != "scratch":
      source, meta = protocol.pretrained(group.model, group.regime, group.seed)
      if group.regime != "imagenet":
        a_before = protocol.location_map(protocol.predictor(source), protocol.test_a)
    return source, a_before, meta

  def run_rows(group: plan.Pretrained, at_rate: plan.AtRate, prepared: tuple[Any, Any, dict[str, Any]]) -> None:
    source, a_before, meta = prepared
    with protocol.rows_at(at_rate):
      for rid in [r for r in at_rate.rows if r not in done]:
        if stop.is_set():  # another thread failed, or the run was interrupted: end between rows
          return
        finished(rid, protocol.row(rid, source, a_before, probe_point(rid, done), done, meta.get("weights")))

  todo = [g for g in groups if any(rid not in done for rid in g.rows)]
  new = {rid for g in todo for rid in g.rows if rid not in done}
  at_rates = lambda g: [a for a in g.rates if any(rid not in done for rid in a.rows)]
  # Training programs are traced, lowered and compiled in the background while the first rows run.
  ahead = threading.Thread(target=_compile_ahead, args=(protocol, set(done)), name="shiftbench-ahead", daemon=True)
  try:
    ahead.start()
    for group in row_pool.run_groups(todo, at_rates, prepare, run_rows, settings.row_threads, stop):
      protocol.close_group(group)
      for rid in group.rows:  # once the group is done: `invariance_lost` needs its last and full rows
        if rid in new and rid in done:
          tracker.log_row(done[rid], output_dir / done[rid]["heatmap"])
    bar.close()
    if len(done) > resumed:  # rows ran here; a resume with nothing left to do leaves results.json as it was
      # This invocation's wall time, to its last row (a resumed run: since it resumed), for the page's header.
      record["environment"]["wall_seconds"] = round(time.monotonic() - started, 1)
      files.write_json(opened.results_path, record)
    rows = collect.annotate(record)
    board = leaderboard.write_leaderboard(rows, output_dir, reference_rows=settings.reference)
    print(f"\n{terminal.summary(board, output_dir)}\n", flush=True)
    tracker.log_table(
      board.columns,
      board.rows,
      {n: output_dir / f"{n}.png" for n in ("headline", "location_maps", "forgetting_curves")},
    )
    tracker.log_table(claims.COLUMNS, claims.table(board.claims), key="claims")
    tracker.log_table(*tidy.table(rows), key="rows", as_text=False)
    exit_code = 0
  finally:
    bar.close()
    ahead.join()  # then nothing more is queued: drop what is left
    programs.drop_ahead()
    tracker.finish(exit_code)
  return record


def _compile_ahead(protocol: Protocol, done: set[schema.RowId]) -> None:
  """`Protocol.compile_ahead` on its own thread: a speed-up, never a result, so a failure is logged and
  each program then compiles when first used."""
  try:
    protocol.compile_ahead(done)
  except Exception as e:  # noqa: BLE001
    log.debug("compiling ahead failed (%s); programs compile when first used", e)
