"""The experiment: pretrain on A -> fine-tune on B at one location -> location maps (docs/protocol.md).

One row (`schema.RowId`) per model x pretrain regime x fine-tune mode x method and setting x fine-tune
learning rate x seed, run group by group (`runs.plan`) through `runs.protocol.Protocol`. `results.json` is
rewritten atomically after every row, so an interrupted or requeued run resumes where it stopped and loses
nothing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from shiftbench.claims import catalogue as claims
from shiftbench.infra import files
from shiftbench.models import torchvision_weights
from shiftbench.reporting import leaderboard, terminal, tidy
from shiftbench.rows import collect, comparison, schema
from shiftbench.runs import compile_cache, plan, pretraining, progress, protocol_data, run_dir
from shiftbench.runs.environment import environment
from shiftbench.runs.protocol import Protocol, probe_point, score_text
from shiftbench.runs.settings import Settings
from shiftbench.training import loop as train

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
  try:
    protocol.compile_ahead(done)  # training programs compile in the background while rows run
    for group in groups:
      new = [rid for rid in group.rows if rid not in done]
      if not new:
        continue
      source, a_before, meta = None, None, {}
      if group.regime != "scratch":
        source, meta = protocol.pretrained(group.model, group.regime, group.seed)
        if group.regime != "imagenet":
          a_before = protocol.location_map(protocol.predictor(source), protocol.test_a)
      with protocol.rows_of(group):
        for at_rate in group.rates:
          with protocol.rows_at(at_rate):
            for rid in [r for r in at_rate.rows if r not in done]:
              row = protocol.row(rid, source, a_before, probe_point(rid, done), done, meta.get("weights"))
              done[rid] = row
              schema.fill_invariance_lost(done.values())
              record["rows"] = list(done.values())
              files.write_json(opened.results_path, record)
              log.info(
                "%s: in %.3f off %.3f invariance %s (%s)",
                rid.name(),
                row["in_acc"],
                row["off_acc"],
                score_text(row["invariance"]),
                bar.advance(),
              )
      for rid in new:  # once the group is done: `invariance_lost` needs its last and full rows
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
    train.drop_ahead()
    tracker.finish(exit_code)
  return record
