"""The whole protocol on tiny settings: outputs, resume, reuse of pretrained checkpoints, the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides
from hydra import compose, initialize_config_dir

import shiftbench
from shiftbench.infra.files import to_jsonable
from shiftbench.runs.experiment import run_experiment

CONF = Path(__file__).resolve().parent.parent / "conf"
ROW_FIELDS = {
  "model",
  "pretrain",
  "finetune",
  "finetune_lr",
  "seed",
  "val_in_acc",
  "consistency_local",
  "finetune_stop",
  "in_acc",
  "off_acc",
  "invariance",
  "location_map",
  "curve",
  "pretrain_invariance_before",
  "pretrain_invariance_after",
  "pretrain_invariance_lost",
  "invariance_lost",
  "params",
  "similarity",
  "similarity_layers",
  "similarity_before",
  "consistency",
  "consistency_circular",
  "worst_case_acc",
  "worst_of_k_acc",
  "flip_rate",
}


def _cfg(tiny_data_dir, tmp_path, extra=()):
  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    return compose("config", overrides=tiny_overrides(tiny_data_dir, str(tmp_path / "ckpt")) + list(extra))


@pytest.mark.slow
def test_tiny_protocol_writes_every_row_and_artifact(tiny_data_dir, tmp_path, capsys):
  cfg = _cfg(
    tiny_data_dir,
    tmp_path,
    [
      "model=[cnn_fc,gap]",
      "finetune.learning_rates=[1e-3,1e-2]",
      "finetune.curve_steps=[1,3]",
      "arms={gap: [scratch/full, translate/last]}",  # only the rows asked for (and fewer compiles)
    ],
  )
  out = tmp_path / "run"
  record = run_experiment(cfg, out)
  rows = json.loads((out / "results.json").read_text())["rows"]
  assert len(rows) == (4 + 2) * 2 == len(record["rows"])
  keys = {(r["model"], r["pretrain"], r["finetune"], r["finetune_lr"]) for r in rows}
  # scratch pairs with full only (a random frozen backbone measures nothing); translate with every mode;
  # one row per fine-tune rate, the pretrained model shared; gap runs only its arms
  arms = {"cnn_fc": [("scratch", "full"), ("translate", "last"), ("translate", "head"), ("translate", "full")]}
  arms["gap"] = arms["cnn_fc"][:2]
  assert keys == {(m, p, f, lr) for m, pairs in arms.items() for p, f in pairs for lr in (1e-3, 1e-2)}
  by_rate = {(r["model"], r["pretrain"], r["finetune"], r["finetune_lr"]): r for r in rows}
  for (m, p, f, lr), r in by_rate.items():
    assert r["finetune_stop"] == {"rule": "steps", "step": 4} and 0 <= r["val_in_acc"] <= 1
    if p == "translate" and f != "last":  # head and full start their curve from the probe (`last`) at this rate
      assert r["curve"][0] == {**by_rate[(m, p, "last", lr)]["curve"][-1], "step": 0, "from": "probe"}
    else:
      assert "from" not in r["curve"][0]
  ckpt_names = [p.name for p in (tmp_path / "ckpt").iterdir()]
  assert len(ckpt_names) == 2, ckpt_names  # one pretraining per model, shared by both rates
  rows = [r for r in rows if r["finetune_lr"] == 1e-2]
  saved = json.loads((out / "results.json").read_text())
  assert saved["environment"]["versions"]["jax"] and saved["environment"]["devices"]
  assert saved["environment"]["versions"]["shiftbench"] == shiftbench.__version__  # the code that ran
  assert saved["config"]["seeds"] == [0]
  by_key = {(r["model"], r["pretrain"], r["finetune"]): r for r in rows}
  for r in rows:
    assert set(r) >= ROW_FIELDS
    acc = np.array(r["location_map"]["acc"])
    assert acc.shape == (len(r["location_map"]["ys"]), len(r["location_map"]["xs"]))
    assert ((acc >= 0) & (acc <= 1)).all()
    assert [c["step"] for c in r["curve"]] == [0, 1, 2, 3, 4]  # step 0, curve_steps and every eval_every
    assert (out / r["heatmap"]).is_file()
    if r["pretrain"] == "scratch":
      assert r["pretrain_invariance_before"] is None and r["pretrain_in_acc_before"] is None
    else:
      assert r["pretrain_in_acc_before"] is not None
    if r["pretrain"] == "translate" and r["finetune"] == "last":  # only B's classifier trained: A is untouched
      assert r["pretrain_in_acc_after"] == r["pretrain_in_acc_before"]
    assert r["params"] > 0 and 0 <= r["consistency"] <= 1 and 0 <= r["flip_rate"] <= 1
    assert r["worst_case_acc"] <= r["worst_of_k_acc"] + 1e-9  # every location is at least as hard as k of them
    if r["pretrain"] == "translate" and r["model"] == "cnn_fc":
      last = by_key[(r["model"], r["pretrain"], "last")]["invariance"]  # each row's own loss against it
      own = None if r["finetune"] == "last" else r["invariance"]
      assert r["invariance_lost"] is None or r["invariance_lost"] == pytest.approx(last - own)
    else:
      assert r["invariance_lost"] is None
  board = (out / "leaderboard.md").read_text()
  assert "| cnn_fc" in board and "| gap" in board and (out / "leaderboard.csv").is_file()
  assert "consistency" in board and "worst_case" in board and "flip_rate" in board and "similarity" in board
  assert "Claims from the literature" in board and "needs ≥3 seeds" in board  # one seed: no verdicts
  for name in (
    "leaderboard.json",
    "claims.json",
    "index.html",
    "location_maps.png",
    "forgetting_curves.png",
    "headline.png",
  ):
    assert (out / name).is_file()
  assert "invariance" in capsys.readouterr().out
  ckpts = list((tmp_path / "ckpt").iterdir())
  assert sorted(p.name.split("-")[0] for p in ckpts) == ["cnn", "gap"] or len(ckpts) == 2


@pytest.mark.slow
def test_same_seed_reproduces_and_a_rerun_resumes_and_reuses_checkpoints(tiny_data_dir, tmp_path):
  cfg = _cfg(tiny_data_dir, tmp_path, ["model=gap", "finetune.modes=[full]"])
  first = to_jsonable(run_experiment(cfg, tmp_path / "a")["rows"])
  second = to_jsonable(run_experiment(cfg, tmp_path / "b")["rows"])  # restores the pretrained checkpoint
  for r1, r2 in zip(first, second):
    assert r1["location_map"] == r2["location_map"] and r1["curve"] == r2["curve"]
  # Resume: a run over an output dir with finished rows recomputes none of them.
  before = (tmp_path / "a" / "results.json").read_text()
  again = run_experiment(cfg, tmp_path / "a")["rows"]
  assert [r["invariance"] for r in again] == [r["invariance"] for r in first]
  assert json.loads(before)["rows"] == json.loads((tmp_path / "a" / "results.json").read_text())["rows"]


@pytest.mark.slow
def test_cli_runs_npz_data(tiny_data_dir, tmp_path):
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(4), 12)
  images = (rng.random((48, 8, 8)) * 60).astype(np.uint8)
  images[np.arange(48), labels + 2, 2:6] = 255  # a class-dependent bar
  npz = tmp_path / "mine.npz"
  np.savez(npz, images=images, labels=labels)
  base = tiny_overrides(tiny_data_dir, str(tmp_path / "ckpt"))
  base = [o for o in base if not o.startswith("data.")]
  env = {**os.environ, "WANDB_MODE": "disabled"}
  jax_cache = tmp_path / "jax_cache"  # the compile cache goes where paths.compile_cache_dir says
  run = subprocess.run(
    [
      sys.executable,
      "-m",
      "shiftbench.cli",
      "data=npz",
      f"data.path={npz}",
      "model=gap",
      f"hydra.run.dir={tmp_path / 'npz_run'}",
      *base,
      "compile_cache=true",
      f"paths.compile_cache_dir={jax_cache}",
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=600,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  saved = json.loads((tmp_path / "npz_run" / "results.json").read_text())
  assert saved["datasets"]["pretrain"].startswith("npz:") and len(saved["rows"]) == 4
  assert saved["resolved"] == {"eval_batch_size": 512}  # eval.batch_size: auto on CPU
  assert any(jax_cache.iterdir()), "no compiled program was written to the compile cache"


def test_missing_npz_file_fails_with_its_path(tmp_path):
  env = {**os.environ, "WANDB_MODE": "disabled"}
  run = subprocess.run(
    [
      sys.executable,
      "-m",
      "shiftbench.cli",
      "data=npz",
      f"data.path={tmp_path}/nope.npz",
      "logger=none",
      f"hydra.run.dir={tmp_path / 'r'}",
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )
  assert run.returncode != 0
  assert f"npz file not found: {tmp_path}/nope.npz" in run.stderr


@pytest.mark.slow
def test_tiny_protocol_with_a_batchnorm_aps_resnet(tiny_data_dir, tmp_path):
  """BatchNorm through the whole protocol (pretraining, its checkpoint, full and head-only fine-tuning, every
  evaluator); APS with circular padding must stay exactly invariant to circular shifts after all of it.
  `last` differs from `head` only in which parameters train, so it is left to the small CNNs' runs."""
  cfg = _cfg(
    tiny_data_dir,
    tmp_path,
    [
      "model=resnet18_aps",
      "model.resnet18_aps.widths=[4,4,8,8]",
      "canvas.size=24",
      "eval.grid_stride=8",
      "finetune.modes=[head]",
    ],
  )
  rows = run_experiment(cfg, tmp_path / "run")["rows"]
  assert [(r["pretrain"], r["finetune"]) for r in rows] == [("scratch", "full"), ("translate", "head")]
  for r in rows:
    assert r["consistency_circular"] == 1.0
    assert np.isfinite(np.array(r["location_map"]["acc"])).all()


@pytest.mark.slow
def test_a_row_not_significantly_above_chance_shows_no_invariance(tiny_data_dir, tmp_path):
  # One step at a negligible learning rate: the classifier is as good as random, so whatever the off/in
  # ratio happens to be, it must not be reported.
  cfg = _cfg(
    tiny_data_dir,
    tmp_path,
    [
      "model=gap",
      "pretrain.regimes=[scratch]",
      "finetune.steps=1",
      "finetune.eval_every=0",
      "finetune.learning_rates=[1e-9]",
    ],
  )
  row = run_experiment(cfg, tmp_path / "run")["rows"][0]
  assert row["in_pvalue"] >= 0.01 and row["test_objects"] == 18
  assert row["invariance"] is None or np.isnan(row["invariance"])
  saved = json.loads((tmp_path / "run" / "results.json").read_text())["rows"][0]
  assert saved["invariance"] is None  # null in JSON
  board = (tmp_path / "run" / "leaderboard.md").read_text().splitlines()
  header = [c.strip() for c in board[0].split("|")]
  cells = [c.strip() for c in board[2].split("|")]
  assert cells[header.index("invariance")] == "-" and cells[header.index("in_acc")] != "-"


def test_pretrained_cache_keys_never_match_across_heads_or_protocol_versions(monkeypatch):
  from shiftbench.rows import comparison
  from shiftbench.training import checkpoints as pretrained

  desc = {"model": {"head": "fc", "fc_hidden": [256, 256]}, "seed": 0}
  key = pretrained.checkpoint_key(desc)
  assert key == pretrained.checkpoint_key({**desc})  # stable
  assert key != pretrained.checkpoint_key({**desc, "model": {"head": "fc", "fc_hidden": []}})
  monkeypatch.setattr(comparison, "PROTOCOL_VERSION", "0")  # a cache written under another protocol
  assert key != pretrained.checkpoint_key(desc)


@pytest.mark.slow
def test_protocol_runs_on_real_handwritten_digits_shipped_with_scikit_learn(tiny_data_dir, tmp_path):
  pytest.importorskip("sklearn")
  sys.path.insert(0, str(CONF.parent / "scripts"))
  from sklearn_digits_npz import main as write_digits

  npz = tmp_path / "digits.npz"
  write_digits([str(npz)])
  base = [o for o in tiny_overrides(tiny_data_dir, str(tmp_path / "ckpt")) if not o.startswith("data.")]
  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    cfg = compose(
      "config", overrides=[*base, "data=npz", f"data.path={npz}", "model=cnn_fc", "pretrain.regimes=[scratch]"]
    )
  record = run_experiment(cfg, tmp_path / "run")
  assert record["datasets"]["pretrain"].startswith("npz:") and len(record["rows"]) == 1
  row = record["rows"][0]
  assert row["chance"] == pytest.approx(1 / 5)  # digits 0-4 pretrain, 5-9 fine-tune
  assert 170 <= row["test_objects"] <= 190  # a stratified 20% of the ~900 images of digits 5-9
