"""Numbers that stay right across runs (issue 16): comparison keys, checkpoint identity, balanced subsets,
independent random streams, A/B disjointness. Each test names what it caught on shiftbench 0.3."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import tiny_overrides
from hydra import compose, initialize_config_dir

from shiftbench.data import streams, subsets
from shiftbench.infra.errors import CacheError, ConfigError, DataError
from shiftbench.reporting import leaderboard
from shiftbench.rows import collect, comparison
from shiftbench.rows.comparison import PROTOCOL_VERSION
from shiftbench.runs import protocol_data, run_dir
from shiftbench.runs.experiment import run_experiment
from shiftbench.runs.settings import Settings
from shiftbench.training import checkpoints as pretrained

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
# No shift metrics (they are tested elsewhere): these tests are about which numbers are comparable.
FAST = ["model=gap", "~eval.metrics", "finetune.eval_every=0"]


def _cfg(data_dir, ckpt, extra=()):
  base = tiny_overrides(str(data_dir), str(ckpt))
  if "data=npz" in extra:  # the glyph keys do not exist there
    base = [o for o in base if not o.startswith("data.")]
  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    return compose("config", overrides=base + FAST + list(extra))


def _checkpoints(ckpt: Path) -> list[str]:
  return sorted(p.name for p in ckpt.iterdir() if pretrained.exists(p)) if ckpt.is_dir() else []


# -- the comparison key -------------------------------------------------------------------------------
def test_key_ignores_seeds_paths_and_batch_size_but_not_settings_that_change_numbers(tiny_data_dir, tmp_path):
  def protocol(extra):
    s = Settings.from_config(_cfg(tiny_data_dir, tmp_path / "c", extra))
    return comparison.protocol_settings(s.config, {"pretrain": "a", "finetune": "b"}, "v")

  base = comparison.key_of(protocol([]))
  for same in (
    ["seeds=[3,4]"],
    ["eval.batch_size=7"],
    [f"paths.checkpoint_dir={tmp_path}/other"],
    ["data.pretrain.workers=1"],
    ["logger=wandb"],
    ["finetune.learning_rates=[0.1]"],  # a row dimension: each row carries its finetune_lr instead
  ):
    assert comparison.key_of(protocol(same)) == base, same
  for other in (
    ["canvas.size=24"],
    ["finetune.steps=5"],
    ["eval.grid_stride=3"],
    ["+finetune.optimizer.b1=0.8"],
    ["eval.max_objects=10"],
    ["pretrain.jitter=2"],
  ):
    assert comparison.key_of(protocol(other)) != base, other
  assert comparison.differing([protocol([]), protocol(["canvas.size=24"])]) == ["canvas.size"]


def test_runs_that_differ_in_canvas_size_are_two_groups_with_their_own_claims(tiny_results, tiny_data_dir, tmp_path):
  """0.3: one leaderboard row per model x regime x mode x dataset name, so canvas 20 and 24 merged."""
  cfg = _cfg(
    tiny_data_dir,
    tmp_path / "ckpt",
    ["canvas.size=24", "pretrain.regimes=[scratch]", "finetune.scratch_modes=[head,full]"],
  )
  run_experiment(cfg, tmp_path / "c24")
  out = tmp_path / "board"
  run = subprocess.run(
    [
      sys.executable,
      "-m",
      "shiftbench.reporting.leaderboard",
      str(tiny_results / "seed0"),
      str(tmp_path / "c24"),
      "--out",
      str(out),
      "--no-figures",
    ],
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ, "PYTHONPATH": str(ROOT)},
  )
  assert run.returncode == 0, run.stderr[-2000:]
  entries = json.loads((out / "leaderboard.json").read_text())
  assert len(entries) == 4 and len({e["comparison_key"] for e in entries}) == 2
  for e in entries:
    assert e["seeds"] == [0] and e["invariance_n"] <= 1  # never one row "seeds [0]" with n = 2
  assert sorted(e["settings"]["canvas.size"] for e in entries) == [20, 20, 24, 24]
  header = (out / "leaderboard.md").read_text().splitlines()[0]
  assert "canvas.size" in header and "protocol" in header  # the setting that differs is a column
  groups = {c["group"] for c in json.loads((out / "claims.json").read_text())}
  assert len(groups) == 2  # each group has its own claims report


def test_the_same_run_collected_twice_counts_once(tiny_results):
  """0.3: a run directory and a parent holding it were read twice, doubling n and narrowing intervals."""
  once = leaderboard.build(collect.collect([tiny_results]))
  twice = leaderboard.build(collect.collect([tiny_results, tiny_results / "seed0", tiny_results / "seed1"]))
  assert once.markdown == twice.markdown and once.csv == twice.csv
  assert {e["invariance"][2] for e in twice.entries} == {2}  # two seeds, not four


def test_one_row_with_two_different_results_is_an_error_naming_both_files(tiny_results, tmp_path):
  record = json.loads((tiny_results / "seed0" / "results.json").read_text())
  record["rows"][0]["in_acc"] = 0.123456
  (tmp_path / "copy").mkdir()
  (tmp_path / "copy" / "results.json").write_text(json.dumps(record))
  with pytest.raises(DataError, match=r"seed0/results.json and .*copy/results.json both hold"):
    collect.collect([tiny_results / "seed0", tmp_path / "copy"])


def test_maps_of_different_grids_never_average():
  a = {"location_map": {"ys": [0, 4], "xs": [0, 4], "acc": [[1.0, 0.0], [0.0, 1.0]]}}
  b = {"location_map": {"ys": [0, 2, 4], "xs": [0, 2, 4], "acc": np.zeros((3, 3)).tolist()}}
  assert leaderboard._mean_map([a, b]) is None  # 0.3 returned a's map as the "mean"
  assert leaderboard._mean_map([a, a])["acc"] == [[1.0, 0.0], [0.0, 1.0]]


# -- checkpoints keyed by what they are -----------------------------------------------------------------
PRETRAIN_ONLY = ["pretrain.regimes=[translate]", "finetune.modes=[last]"]


def test_runs_that_differ_only_in_global_widths_keep_two_checkpoints(tiny_data_dir, tmp_path, caplog):
  """0.3 keyed checkpoints by the unresolved `${widths}`: the second width pretrained over the first."""
  ckpt = tmp_path / "ckpt"
  for widths in ("[4,8]", "[4,6]"):
    run_experiment(_cfg(tiny_data_dir, ckpt, PRETRAIN_ONLY + [f"widths={widths}"]), tmp_path / f"w{widths}")
  assert len(_checkpoints(ckpt)) == 2
  caplog.set_level("INFO")
  for widths in ("[4,8]", "[4,6]"):  # a second run of each restores its own, pretraining nothing
    run_experiment(
      _cfg(tiny_data_dir, ckpt, PRETRAIN_ONLY + [f"widths={widths}", "overwrite=true"]), tmp_path / f"w{widths}"
    )
  assert caplog.text.count(": restored from") == 2 and len(_checkpoints(ckpt)) == 2


def _npz(path: Path, seed: int, class_sorted: bool = True) -> Path:
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(6), 30)
  images = rng.integers(0, 256, (len(labels), 8, 8), dtype=np.uint8)
  images[np.arange(len(labels)), labels, :] = 255  # a class-specific row, so the task is learnable
  if not class_sorted:
    order = rng.permutation(len(labels))
    images, labels = images[order], labels[order]
  np.savez(path, images=images, labels=labels)
  return path


def test_an_npz_rewritten_in_place_or_another_npz_never_restores_the_first_ones_checkpoint(tiny_data_dir, tmp_path):
  """0.3 keyed the data by the literal `${data.path}`: any .npz with the same class split restored it."""
  ckpt = tmp_path / "ckpt"

  def run(path, name):
    run_experiment(
      _cfg(tiny_data_dir, ckpt, PRETRAIN_ONLY + ["data=npz", f"data.path={path}", "overwrite=true"]), tmp_path / name
    )

  first = _npz(tmp_path / "d.npz", seed=0)
  run(first, "r1")
  assert len(_checkpoints(ckpt)) == 1
  _npz(first, seed=1)  # the same file, other images
  run(first, "r2")
  assert len(_checkpoints(ckpt)) == 2
  run(_npz(tmp_path / "d_other.npz", seed=2), "r3")
  assert len(_checkpoints(ckpt)) == 3
  _npz(first, seed=0)  # the first images again: that checkpoint is what they are
  run(first, "r4")
  assert len(_checkpoints(ckpt)) == 3


def test_a_checkpoint_holding_another_model_is_an_error_naming_both_never_deleted(tiny_data_dir, tmp_path):
  ckpt = tmp_path / "ckpt"
  cfg = _cfg(tiny_data_dir, ckpt, PRETRAIN_ONLY)
  run_experiment(cfg, tmp_path / "r")
  (path,) = [ckpt / n for n in _checkpoints(ckpt)]
  meta = json.loads((path / "meta.json").read_text())
  s = Settings.from_config(cfg)
  import hydra
  from flax import nnx

  wider = hydra.utils.instantiate({**s.models["gap"], "widths": [4, 16]})(
    num_classes=3, canvas_size=20, in_channels=1, rngs=nnx.Rngs(0)
  )
  with pytest.raises(CacheError, match="cannot be restored into this model") as e:
    pretrained.restore(path, wider, meta["description"])
  assert not getattr(e.value, "corrupted", False) and pretrained.exists(path)
  other = {**meta["description"], "steps": 999}
  with pytest.raises(CacheError, match="holds another model under this key.*999"):
    pretrained.restore(path, wider, other)
  assert pretrained.exists(path)


# -- class-balanced, seeded evaluation subsets -------------------------------------------------------------
def test_every_prefix_of_the_balanced_order_is_balanced_and_independent_of_file_order():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(5), 40)  # class-sorted, as files usually are
  images = rng.integers(0, 256, (200, 6, 6, 1), dtype=np.uint8)
  order = subsets.balanced_order(images, labels, seed=0)
  for n in (5, 12, 64, 200):
    counts = np.bincount(labels[order[:n]], minlength=5)
    assert counts.max() - counts.min() <= 1, (n, counts)  # 0.3: the first 64 were one class
  perm = rng.permutation(200)
  shuffled = subsets.balanced_order(images[perm], labels[perm], seed=0)
  assert sorted(perm[shuffled[:64]]) == sorted(order[:64])  # the same objects, whatever the file order
  assert sorted(subsets.balanced_order(images, labels, seed=1)[:64]) != sorted(order[:64])


def test_validation_split_is_class_balanced_held_out_and_evaluated_only_when_asked(tiny_data_dir, tmp_path):
  labels = np.repeat(np.arange(4), 20)
  images = np.random.default_rng(0).integers(0, 256, (80, 6, 6, 1), dtype=np.uint8)
  keep, held = subsets.split_validation(images, labels, 0.25)
  assert np.bincount(labels[held]).tolist() == [5] * 4 and not set(keep) & set(held) and len(keep) + len(held) == 80
  s = Settings.from_config(_cfg(tiny_data_dir, tmp_path, ["eval.split=validation", "eval.validation_fraction=0.25"]))
  from shiftbench.data import ObjectSet

  objs = ObjectSet("t", images, labels.astype(np.int32), images[:8], labels[:8].astype(np.int32), tuple("abcd"))
  train_b, eval_b = protocol_data.device_splits(objs, s, validation=True)
  assert len(train_b) == 60 and len(eval_b) == 20  # validation objects are evaluated, never trained on
  train_images = {np.asarray(x).tobytes() for x in train_b.images}
  assert not any(np.asarray(x).tobytes() in train_images for x in eval_b.images)


def test_similarity_of_one_class_is_undefined_never_raw_cos_same():
  import jax.numpy as jnp

  from shiftbench.evaluators import similarity

  feats = jax.random.normal(jax.random.key(0), (6, 5))
  assert np.isnan(float(similarity.cos_diff(feats, jnp.zeros(6, jnp.int32), 3)))  # 0.3: 0.0
  assert np.isfinite(float(similarity.cos_diff(feats, jnp.arange(6) % 2, 3)))


def test_class_sorted_and_shuffled_files_evaluate_the_same_objects(tiny_data_dir, tmp_path):
  """0.3: the same objects as a class-sorted and a shuffled file gave similarity -0.94 vs +0.42."""
  sorted_file, shuffled_file = _npz(tmp_path / "s.npz", 0), _npz(tmp_path / "u.npz", 0, class_sorted=False)
  results = []
  for path in (sorted_file, shuffled_file):
    s = Settings.from_config(
      _cfg(
        tiny_data_dir,
        tmp_path,
        ["data=npz", f"data.path={path}", "eval.max_objects=9", "data.finetune.test_fraction=0.5"],
      )
    )
    _, data_b = protocol_data.load_datasets(s)
    _, test_b = protocol_data.device_splits(data_b, s, validation=True)
    results.append(sorted(np.asarray(x).tobytes() for x in test_b.images))
    assert np.bincount(np.asarray(test_b.labels)).tolist() == [3, 3, 3]
  assert results[0] == results[1]


# -- random streams ----------------------------------------------------------------------------------------
def test_phases_have_independent_streams_and_seed_plus_one_is_no_other_phase():
  keys = {(seed, phase): streams.stream(seed, phase) for seed in range(3) for phase in streams.PHASES.values()}
  raw = {k: tuple(np.asarray(jax.random.key_data(v)).tolist()) for k, v in keys.items()}
  assert len(set(raw.values())) == len(raw)
  assert raw[(1, streams.PRETRAIN_INIT)] != raw[(0, streams.FINETUNE_INIT)]  # 0.3: scratch s = pretrain s + 1
  assert raw[(0, streams.PRETRAIN_BATCHES)] != raw[(0, streams.FINETUNE_BATCHES)]  # 0.3: one key(seed)
  c1, c2 = streams.evaluator_stream(0, "consistency"), streams.evaluator_stream(0, "consistency_circular")
  assert not np.array_equal(jax.random.key_data(c1), jax.random.key_data(c2))  # 0.3: the same salt


def test_scratch_rows_do_not_start_from_a_pretrained_initialisation(tiny_data_dir, tmp_path):
  s = Settings.from_config(_cfg(tiny_data_dir, tmp_path))
  import hydra
  from flax import nnx

  factory = hydra.utils.instantiate(s.models["gap"])
  build = lambda key: factory(num_classes=3, canvas_size=20, in_channels=1, rngs=nnx.Rngs(key))  # noqa: E731
  pretrain_s1 = nnx.state(build(streams.stream(1, streams.PRETRAIN_INIT)), nnx.Param)
  finetune_s0 = nnx.state(build(streams.stream(0, streams.FINETUNE_INIT)), nnx.Param)
  pairs = [(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(pretrain_s1), jax.tree.leaves(finetune_s0))]
  random = [(a, b) for a, b in pairs if a.std() > 0]  # kernels; zero biases are equal by construction
  assert random and not any(np.array_equal(a, b) for a, b in random)


# -- A and B hold different classes ------------------------------------------------------------------------
def test_overlapping_classes_are_a_config_error_unless_allowed(tiny_data_dir, tmp_path):
  overlap = ["data.finetune.charset=digits", "data.finetune.classes=['2','3','4']"]
  s = Settings.from_config(_cfg(tiny_data_dir, tmp_path, overlap))
  with pytest.raises(ConfigError, match=r"share the classes \['2'\].*data.allow_overlap=true"):
    protocol_data.load_datasets(s)
  allowed = Settings.from_config(_cfg(tiny_data_dir, tmp_path, overlap + ["data.allow_overlap=true"]))
  protocol_data.load_datasets(allowed)
  protocol = comparison.protocol_settings(allowed.config, {}, "v")
  assert protocol["data.allow_overlap"] is True  # recorded in every row's settings


def test_a_run_directory_of_another_protocol_version_is_not_resumed_into(tmp_path):
  """0.3 resumed any run with the same config, so rows of two versions (other streams) could mix; until
  0.7.0 another package version was refused even where no number changed. Now the protocol version decides."""
  config = {"seeds": [0], "canvas": {"size": 20}}
  record = {
    "config": config,
    "environment": {"versions": {"shiftbench": "0.3.0"}},
    "rows": [{"model": "gap", "pretrain": "scratch", "finetune": "full", "finetune_lr": 0.01, "seed": 0}],
  }
  (tmp_path / "results.json").write_text(json.dumps(record))
  with pytest.raises(ConfigError, match=r"protocol version none \(before protocol versions\) \(shiftbench 0.3.0\)"):
    run_dir.resumable_rows(tmp_path / "results.json", config)
  (tmp_path / "results.json").write_text(json.dumps({**record, "protocol_version": "0"}))
  with pytest.raises(
    ConfigError, match=rf"protocol version 0 .*not comparable with this protocol version's \({PROTOCOL_VERSION}\)"
  ):
    run_dir.resumable_rows(tmp_path / "results.json", config)
  # Another package version of this protocol computes the same numbers: its rows are resumed.
  (tmp_path / "results.json").write_text(json.dumps({**record, "protocol_version": PROTOCOL_VERSION}))
  assert len(run_dir.resumable_rows(tmp_path / "results.json", config)) == 1


def test_the_default_run_and_reproduce_share_a_protocol_key_and_the_stopping_rule_does_not():
  """0.4: the default run's rows could be read beside reproduce's only by trusting that no setting
  differed; the rates, seeds, models and arms each runs are row dimensions, not protocol settings."""

  def key(experiment):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
      cfg = compose("config", overrides=[f"experiment={experiment}", "logger=none"])
    s = Settings.from_config(cfg)
    return comparison.key_of(comparison.protocol_settings(s.config, {"pretrain": "a", "finetune": "b"}, "v"))

  assert key("quick") == key("reproduce") != key("reproduce_stop")


def test_resuming_ignores_the_logger_as_the_comparison_key_does(tmp_path):
  """Turning wandb on for a rerun (or off) changes where rows are reported, not what they are."""
  config = {"seeds": [0], "logger": {"mode": "disabled"}, "finetune": {"steps": 5}}
  record = {
    "config": config,
    "protocol_version": PROTOCOL_VERSION,
    "rows": [{"model": "gap", "pretrain": "scratch", "finetune": "full", "finetune_lr": 0.01, "seed": 0}],
  }
  (tmp_path / "results.json").write_text(json.dumps(record))
  assert len(run_dir.resumable_rows(tmp_path / "results.json", {**config, "logger": {"mode": "offline"}})) == 1
  with pytest.raises(ConfigError, match=r"differs in: finetune.steps"):
    run_dir.resumable_rows(tmp_path / "results.json", {**config, "finetune": {"steps": 6}})
