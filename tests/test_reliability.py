"""Reliability (issue 12): no hangs, no silent overwrites, no trivially perfect rows, verified caches, and
one-line causes as the last line. One or more cases per class of failure; the CLI ones run a subprocess
and check its exit code, its last line of stderr and that nothing of an earlier run was lost."""

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optax
import pytest
from conftest import tiny_overrides
from flax import nnx
from hydra import compose, initialize_config_dir

from shiftbench import evaluators
from shiftbench.data import load_npz, require_task
from shiftbench.data.canvas import CanvasSpec
from shiftbench.data.device import DeviceObjects
from shiftbench.infra import files as results
from shiftbench.infra import network
from shiftbench.infra.errors import CacheError, ConfigError, DataError, DivergenceError
from shiftbench.models import ShiftNet
from shiftbench.reporting import leaderboard, tracking
from shiftbench.runs import door, preflight
from shiftbench.runs.experiment import run_experiment
from shiftbench.runs.settings import Settings
from shiftbench.training import checkpoints as pretrained
from shiftbench.training import loop, stopping

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
SCRATCH = ["model=gap", "pretrain.regimes=[scratch]", "finetune.modes=[full]"]


def _cfg(tiny_data_dir, tmp_path, extra=()):
  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    return compose("config", overrides=tiny_overrides(tiny_data_dir, str(tmp_path / "ckpt")) + list(extra))


def _cli(args, timeout=120, env=None):
  start = time.perf_counter()
  run = subprocess.run(
    [sys.executable, "-m", "shiftbench.cli", *args], capture_output=True, text=True, env=env or ENV, timeout=timeout
  )
  return run, time.perf_counter() - start


def _last_line(run) -> str:
  lines = [line for line in run.stderr.splitlines() if line.strip()]
  return lines[-1] if lines else ""


def _snapshot(directory: Path) -> dict[str, bytes]:
  return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# -- BAD 1: a failed checkpoint save exits fast, naming the path ------------------------------------------
def test_cache_that_is_a_file_fails_within_seconds_naming_the_path(tmp_path):
  cachefile = tmp_path / "cachefile"
  cachefile.write_text("x\n")
  run, seconds = _cli(
    [
      "model=gap",
      "pretrain.regimes=[translate]",
      "finetune.modes=[full]",
      "logger=none",
      f"hydra.run.dir={tmp_path / 'run'}",
    ],
    env={**ENV, "SHIFTBENCH_CACHE": str(cachefile)},
  )
  print(f"unusable cache refused in {seconds:.1f} s")  # _cli's timeout catches a hang; no speed assert
  assert run.returncode == 1
  # The first cache the run touches (rendered glyphs, then checkpoints: one root) names the path.
  assert _last_line(run).startswith("error: ") and str(cachefile) in _last_line(run)
  assert "pretrain" not in run.stdout  # refused before any pretraining step


def test_a_failed_save_raises_one_line_and_leaves_no_thread_behind(tmp_path):
  (tmp_path / "file").write_text("x")
  model = ShiftNet(num_classes=3, canvas_size=16, widths=(4,), head="gap", rngs=nnx.Rngs(0))
  before = {t for t in threading.enumerate() if not t.daemon}
  with pytest.raises(CacheError, match=f"cannot save the pretrained checkpoint {tmp_path / 'file'}/ck"):
    pretrained.save(tmp_path / "file" / "ck", model, {})
  lingering = {t for t in threading.enumerate() if not t.daemon and t.is_alive()} - before
  # asyncio's default executor (`asyncio_N`, started by orbax on first use) idles harmlessly: the interpreter
  # shuts it down at exit. The asynchronous checkpointer left three threads of its own here
  # (serialize_shardings, array_type_handler, write_metadata_after_commits), and the process never exited.
  assert not {t.name for t in lingering if not t.name.startswith("asyncio_")}


# -- BAD 2: a reused run directory is refused, the same config resumes, overwrite=true replaces ----------
def test_reused_run_dir_with_another_config_is_refused_and_nothing_is_lost(tiny_data_dir, tmp_path):
  out = tmp_path / "run"
  run_experiment(_cfg(tiny_data_dir, tmp_path, SCRATCH), out)
  first = _snapshot(out)
  assert any(name.startswith("heatmaps/") for name in first)
  with pytest.raises(ConfigError, match=r"different config \(differs in: finetune.steps\).*overwrite=true"):
    run_experiment(_cfg(tiny_data_dir, tmp_path, SCRATCH + ["finetune.steps=6"]), out)
  assert _snapshot(out) == first
  # The CLI refuses before Hydra rewrites .hydra/, and says so on its last line.
  run, _ = _cli(
    [*tiny_overrides(tiny_data_dir, str(tmp_path / "ckpt")), *SCRATCH, "finetune.steps=6", f"hydra.run.dir={out}"]
  )
  assert run.returncode == 1 and _last_line(run).startswith(f"error: {out} holds a run with a different config")
  assert _snapshot(out) == first
  again = run_experiment(_cfg(tiny_data_dir, tmp_path, SCRATCH), out)  # same config: resumes, recomputes nothing
  assert _snapshot(out)["results.json"] == first["results.json"] and len(again["rows"]) == 1
  replaced = run_experiment(_cfg(tiny_data_dir, tmp_path, SCRATCH + ["finetune.steps=6", "overwrite=true"]), out)
  assert replaced["rows"][0]["finetune_steps"] == 6


def test_an_unreadable_results_file_is_not_silently_replaced(tiny_data_dir, tmp_path):
  out = tmp_path / "run"
  out.mkdir()
  (out / "results.json").write_text('{"config": {"seeds": [0')
  with pytest.raises(DataError, match="results.json exists but is not a readable shiftbench results file"):
    run_experiment(_cfg(tiny_data_dir, tmp_path, SCRATCH), out)
  assert (out / "results.json").read_text() == '{"config": {"seeds": [0'


# -- BAD 3: degenerate tasks are errors; metrics fixed by construction are not reported ------------------
def _npz(path, labels, n_per=10, **extra):
  labels = np.repeat(labels, n_per)
  images = np.random.default_rng(0).integers(0, 256, (len(labels), 8, 8), dtype=np.uint8)
  np.savez(path, images=images, labels=labels, **extra)
  return path


def test_a_two_class_npz_splits_into_one_class_per_side_and_is_an_error(tmp_path):
  path = _npz(tmp_path / "two.npz", [0, 1])
  data_a = load_npz(str(path), classes="first_half")
  with pytest.raises(DataError, match=r"dataset A .* has 1 class\(es\) in its train split and 1 in its test split"):
    require_task(data_a, "A (data.pretrain)")
  require_task(load_npz(str(_npz(tmp_path / "four.npz", [0, 1, 2, 3])), classes="first_half"), "A")


def test_the_cli_reports_the_degenerate_split_as_its_last_line(tmp_path):
  path = _npz(tmp_path / "two.npz", [0, 1])
  run, _ = _cli(["data=npz", f"data.path={path}", *SCRATCH, "logger=none", f"hydra.run.dir={tmp_path / 'r'}"])
  assert run.returncode == 1 and "has 1 class(es) in its train split" in _last_line(run)
  assert not (tmp_path / "r" / "results.json").exists()


def test_empty_datasets_and_empty_test_splits_are_errors(tmp_path):
  np.savez(tmp_path / "empty.npz", images=np.zeros((0, 8, 8), np.uint8), labels=np.zeros(0, np.int64))
  with pytest.raises(DataError, match="holds no objects"):
    load_npz(str(tmp_path / "empty.npz"))
  objs = load_npz(
    str(
      _npz(
        tmp_path / "notest.npz", [0, 1, 2], test_images=np.zeros((0, 8, 8), np.uint8), test_labels=np.zeros(0, np.int64)
      )
    )
  )
  with pytest.raises(DataError, match="has an empty test split"):
    require_task(objs, "B (data.finetune)")


def test_consistency_without_any_possible_shift_is_not_reported():
  ctx = evaluators.EvalContext(CanvasSpec(8, 8), np.zeros((1, 2), np.int32), (0, 0), 64, 0)
  assert list(evaluators.ShiftConsistency(d=4).run(None, None, ctx)) == [("", None)]
  assert list(evaluators.ShiftConsistency(d=0, shift="circular").run(None, None, ctx)) == [("", None)]
  with pytest.raises(ConfigError, match="WorstCase k must be >= 1"):
    evaluators.WorstCase(k=0)  # all of no locations: 1.0 by construction


# -- BAD 4: optimiser domains are checked; divergence fails the run -------------------------------------
@pytest.mark.parametrize(
  "override,message",
  [
    ("finetune.optimizer.learning_rate=-0.003", r"finetune.optimizer.learning_rate must be > 0, got -0.003"),
    ("pretrain.optimizer.learning_rate=0", r"pretrain.optimizer.learning_rate must be > 0"),
    ("+pretrain.optimizer.b1=1.0", r"pretrain.optimizer.b1 must be in \[0, 1\)"),
    ("+finetune.optimizer.weight_decay=-1", r"finetune.optimizer.weight_decay must be >= 0"),
  ],
)
def test_optimizer_hyperparameters_outside_their_domain_fail_before_training(override, message):
  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    cfg = compose("config", overrides=[override])
  with pytest.raises(ConfigError, match=message):
    door.check(cfg)


@pytest.mark.parametrize(
  "overrides,message",
  [
    (["finetune.learning_rates=[1e-3,-1]"], r"finetune.learning_rates entries must be numbers > 0, got -1"),
    (["finetune.learning_rates=[]"], r"finetune.learning_rates is empty"),
    (["finetune.learning_rates=[1e-3,1e-3]"], r"finetune.learning_rates has a rate twice"),
    (
      ["finetune.optimizer.learning_rate=1e-3"],
      r"both finetune.learning_rates .* and finetune.optimizer.learning_rate",
    ),
    (["finetune.learning_rates=null"], r"finetune.optimizer.learning_rate is None"),
    (
      ["+finetune.until_accuracy.threshold=0.9", "+finetune.until_accuracy.patience=5"],
      r"patience was replaced by window",
    ),
    (["+finetune.until_accuracy.threshold=0.9", "+finetune.until_accuracy.window=0"], r"window >= 1 steps, got .* 0"),
    (["+arms.cnn_fc=[translate/everything]"], r"arms.cnn_fc entry 'translate/everything' is not regime/mode"),
  ],
)
def test_bad_rates_stopping_rules_and_arms_fail_with_the_bad_value(overrides, message):
  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    cfg = compose("config", overrides=["logger=none", *overrides])
  with pytest.raises(ConfigError, match=message):
    Settings.from_config(cfg)


def _bars(n=60, k=3):
  labels = np.random.default_rng(0).integers(0, k, n)
  images = np.zeros((n, 6, 6, 1), np.uint8)
  images[np.arange(n), 2 * labels, :, 0] = 255
  return DeviceObjects.from_numpy(images, labels, k)


def test_a_huge_learning_rate_with_a_finite_loss_is_divergence():
  model = ShiftNet(num_classes=3, canvas_size=16, widths=(4, 8), head="gap", rngs=nnx.Rngs(0))
  with pytest.raises(DivergenceError, match=r"finetune gap/x/full/s0: training diverged at step \d+: loss"):
    loop.train(
      model,
      optax.adam(1e6),
      _bars(),
      CanvasSpec(16, 6),
      loop.Placement("fixed", (0, 0)),
      steps=10,
      batch_size=8,
      seed=0,
      desc="finetune gap/x/full/s0",
    )


def test_divergence_needs_several_points_mid_run_and_ignores_normal_noise():
  hist = lambda *losses: [{"step": 10 * i, "loss": v} for i, v in enumerate(losses)]  # noqa: E731
  stopping.check_divergence(hist(1.1, 1.6, 0.9, 1.8, 0.4), 3, "t", final=True)  # noisy but fine
  stopping.check_divergence(hist(1.1, 50.0), 3, "t")  # one spike mid-run: not yet
  with pytest.raises(DivergenceError):
    stopping.check_divergence(hist(1.1, 50.0, 60.0, 70.0), 3, "t")
  with pytest.raises(DivergenceError, match="at step 10"):
    stopping.check_divergence(hist(1.1, 50.0), 3, "t", final=True)
  model = ShiftNet(num_classes=3, canvas_size=16, widths=(4, 8), head="gap", rngs=nnx.Rngs(0))
  loop.train(
    model,
    optax.adam(3e-2),
    _bars(),
    CanvasSpec(16, 6),
    loop.Placement("translate", (0, 0)),
    steps=30,
    batch_size=4,
    seed=0,
    log_every=1,
    dispatch=1,
  )  # tiny noisy batches, every step checked


# -- BAD 5: cached checkpoints are verified; bad bytes are never used ------------------------------------
def _saved(tmp_path):
  model = ShiftNet(num_classes=3, canvas_size=16, widths=(4,), head="gap", rngs=nnx.Rngs(0))
  path = tmp_path / "ck"
  pretrained.save(path, model, {"history": [{"step": 1, "loss": 1.0}]})
  return path, model


def _flip(path: Path, offset: int | None = None):
  data = bytearray(path.read_bytes())
  data[len(data) // 2 if offset is None else offset] ^= 1
  path.write_bytes(bytes(data))


def test_one_flipped_bit_in_a_checkpoint_or_its_metadata_is_found(tmp_path):
  path, model = _saved(tmp_path)
  assert pretrained.verify(path)["history"][0]["loss"] == 1.0
  biggest = max((p for p in (path / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  _flip(biggest)
  with pytest.raises(CacheError, match=f"checkpoint file {biggest} does not match its sha256.*rm -rf {path}"):
    pretrained.restore(path, model)
  _flip(biggest)  # back to the saved bytes
  meta = path / "meta.json"
  meta.write_text(meta.read_text().replace('"loss": 1.0', '"loss": 1.5'))
  with pytest.raises(CacheError, match="meta.json does not match its sha256"):
    pretrained.verify(path)
  meta.write_text(meta.read_text()[:50])
  with pytest.raises(CacheError, match="meta.json is unreadable"):
    pretrained.verify(path)


def test_a_corrupted_cached_checkpoint_is_made_again_with_one_line(tiny_data_dir, tmp_path, caplog):
  cfg = _cfg(tiny_data_dir, tmp_path, ["model=gap", "pretrain.regimes=[translate]", "finetune.modes=[head]"])
  first = run_experiment(cfg, tmp_path / "a")["rows"][0]
  (ckpt,) = (tmp_path / "ckpt").iterdir()
  _flip(max((p for p in (ckpt / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size))
  with caplog.at_level(logging.WARNING):
    second = run_experiment(cfg, tmp_path / "b")["rows"][0]
  assert "does not match its sha256 (corrupted): removing the checkpoint and pretraining it again" in caplog.text
  assert results.to_jsonable(second["location_map"]) == results.to_jsonable(first["location_map"])
  pretrained.verify(ckpt)  # made again, whole


# -- BAD 6: unknown top-level keys --------------------------------------------------------------------
def test_a_typo_key_added_with_plus_is_an_error_with_the_nearest_key():
  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    cfg = compose("config", overrides=["+finetun.steps=5"])
    with pytest.raises(ConfigError, match="unknown config key 'finetun'.*did you mean 'finetune'"):
      door.check(cfg)
    door.check(compose("config", overrides=["experiment=forgetting", "overwrite=true"]))


def test_the_cli_ends_with_the_cause_even_with_hydra_full_error(tmp_path):
  run, seconds = _cli(
    ["+seedz=[1]", "logger=none", f"hydra.run.dir={tmp_path / 'r'}"], env={**ENV, "HYDRA_FULL_ERROR": "1"}
  )
  print(f"unknown key refused in {seconds:.1f} s")
  assert run.returncode == 1
  assert (
    _last_line(run) == "error: unknown config key 'seedz' (the config defines no such top-level key, so it "
    "would be ignored); did you mean 'seeds'?"
  )


# -- POOR: corrupted files, bad lists, unwritable dirs, online logging, file modes ----------------------
def test_a_truncated_npz_names_the_file(tmp_path):
  path = _npz(tmp_path / "data.npz", [0, 1, 2, 3])
  path.write_bytes(path.read_bytes()[:300])
  with pytest.raises(DataError, match=f"{path} is not a readable .npz file"):
    load_npz(str(path))


def test_a_corrupted_results_file_is_the_leaderboards_last_line(tmp_path):
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "results.json").write_text('{"rows": [{"model": "gap"')
  with pytest.raises(SystemExit, match=r"error: .*run/results.json is not a readable shiftbench results.json"):
    leaderboard.main([str(tmp_path / "run"), "--out", str(tmp_path / "board"), "--no-figures"])


@pytest.mark.parametrize(
  "override,message",
  [
    ("widths=[]", "widths is empty"),
    ("seeds=[a]", r"seeds must be a list of integers, got 'a'"),
    ("widths=[8,1.5]", "widths must be a list of integers, got 1.5"),
    ("model.gap.widths=[0]", r"model.gap.widths values must be >= 1"),
  ],
)
def test_empty_or_non_integer_lists_name_the_key(override, message):
  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    cfg = compose("config", overrides=["model=gap", override])
  with pytest.raises(ConfigError, match=message):
    door.check(cfg)


def test_an_unwritable_run_directory_is_named(tmp_path):
  (tmp_path / "file").write_text("x")
  with pytest.raises(ConfigError, match=f"run directory {tmp_path / 'file'}/run is not writable"):
    preflight.check_writable(tmp_path / "file" / "run", "run directory", "choose another hydra.run.dir")


def test_online_logging_without_network_falls_back_to_offline(tmp_path, monkeypatch, caplog):
  import wandb

  calls = []
  monkeypatch.setattr(wandb, "init", lambda **kw: calls.append(kw["mode"]))
  monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: nothing listens

  probes, real = [], network.reachable
  monkeypatch.setattr(network, "reachable", lambda *a: probes.append(a) or real(*a))
  tracker = tracking.WandbTracker(mode="online")
  with caplog.at_level(logging.WARNING):
    tracker.start({}, tmp_path)
  # The server was probed (a short TCP connect, not wandb's 60 s init timeout), then offline was chosen.
  assert calls == ["offline"] and probes == [("127.0.0.1", 9, 3.0)]
  assert "unreachable: logging offline instead" in caplog.text


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_and_checkpoint_metadata_respect_the_umask(tmp_path, umask, mode):
  old = os.umask(umask)
  try:
    results.atomic_write_text(tmp_path / "a.txt", "x")
    path, _ = _saved(tmp_path)
  finally:
    os.umask(old)
  assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode
  assert (path / "meta.json").stat().st_mode & 0o777 == mode


def test_a_truncated_prepared_tfds_dataset_names_its_directory(tmp_path):
  from test_data import ShiftbenchTinyTest

  from shiftbench.data import load_tfds, tfds_source

  with tfds_source.quiet_tfds():
    ShiftbenchTinyTest(data_dir=str(tmp_path)).download_and_prepare(file_format="array_record")
  (shard,) = [p for p in tmp_path.rglob("*train.array_record*") if p.is_file()]
  shard.write_bytes(shard.read_bytes()[:40])
  with pytest.raises(DataError, match=r"TFDS dataset 'shiftbench_tiny_test' in .* cannot be read .*delete"):
    load_tfds("shiftbench_tiny_test", data_dir=str(tmp_path), download=False)
