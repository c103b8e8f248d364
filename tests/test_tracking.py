"""wandb: one offline run per results row plus one leaderboard run, read back from the files wandb wrote
(no network, no wandb server); disabled is a no-op."""

import json
import struct
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import tiny_overrides  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from shiftbench.reporting import plots  # noqa: E402
from shiftbench.reporting.tracking import WandbTracker  # noqa: E402
from shiftbench.runs import run_dir

CONF = Path(__file__).resolve().parent.parent / "conf"
_BLOCK, _HEADER = 32768, 7  # the LevelDB log format of a `.wandb` file: 32 KiB blocks, 7-byte record headers


def _records(path: Path):
  """The protobuf records of one `.wandb` file (`:W&B` file header, then LevelDB log records)."""
  from wandb.proto import wandb_internal_pb2 as pb

  data = path.read_bytes()
  assert data[:4] == b":W&B"
  pos, parts = _HEADER, b""
  while pos + _HEADER <= len(data):
    left = _BLOCK - pos % _BLOCK
    _, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
    if left < _HEADER or kind == 0:  # block trailer: padding up to the next block
      pos += left
      continue
    chunk, pos = data[pos + _HEADER : pos + _HEADER + length], pos + _HEADER + length
    parts = chunk if kind in (1, 2) else parts + chunk  # 1 full, 2 first, 3 middle, 4 last
    if kind in (1, 4):
      record = pb.Record()
      record.ParseFromString(parts)
      yield record


def read_offline_run(run_dir: Path) -> dict:
  """group, job_type, name, config, summary and history of one `wandb/offline-run-*` directory."""
  (path,) = run_dir.glob("run-*.wandb")
  out = {"config": {}, "summary": {}, "history": []}
  for r in _records(path):
    kind = r.WhichOneof("record_type")
    if kind == "run":
      out.update(group=r.run.run_group, job_type=r.run.job_type, name=r.run.display_name)
      out["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
    elif kind == "history":
      out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
    elif kind == "summary":
      for i in r.summary.update:
        out["summary"][i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
  return out


def offline_runs(output_dir: Path, timeout: float = 30.0) -> list[dict]:
  """Every offline run under `output_dir`, once each has its exit record: wandb's service process may
  still be writing a finished run's file when `finish()` returns."""
  files = sorted((output_dir / "wandb").glob("offline-run-*/run-*.wandb"))
  deadline = time.monotonic() + timeout
  while not all(any(r.HasField("exit") for r in _records(f)) for f in files) and time.monotonic() < deadline:
    time.sleep(0.2)
  return [read_offline_run(f.parent) for f in files]


def _row(mode="head", seed=0):
  return {
    "model": "gap",
    "pretrain": "translate",
    "finetune": mode,
    "finetune_lr": 0.01,
    "seed": seed,
    "in_acc": 0.9,
    "off_acc": 0.8,
    "invariance": 0.875,
    "invariance_lost": None,
    "comparison_key": "abc123",
    "comparison": {"canvas.size": 32},
    "similarity_layers": {"conv0": 0.5, "pre_logits": 0.25},
    "curve": [
      {"step": 0, "in_acc": 0.1, "off_acc": 0.1, "invariance": None},
      {"step": 5, "in_acc": 0.9, "off_acc": 0.8, "invariance": 0.875},
    ],
  }


def test_each_row_is_a_run_in_the_experiments_group_with_identity_curve_and_summary(tmp_path, monkeypatch):
  monkeypatch.delenv("WANDB_MODE", raising=False)
  heatmap = plots.save_location_map(tmp_path / "h.png", np.full((3, 3), 0.5), np.arange(3), np.arange(3), 0.1)
  config = {"seeds": [0, 1], "canvas": {"size": 32}, "model": {"gap": {"head": "gap"}}}
  tracker = WandbTracker(mode="offline", project="shiftbench-test")
  tracker.start(config, tmp_path, name="run1")
  tracker.log_row(_row("head", 0), heatmap)
  tracker.log_row(_row("full", 1), heatmap)
  tracker.log_table(["model", "invariance"], [["gap", "0.875 ± 0.010"]])
  tracker.log_table(["model", "seed", "invariance"], [["gap", 0, 0.875], ["gap", 1, None]], key="rows", as_text=False)
  tracker.finish()
  runs = offline_runs(tmp_path)
  assert sorted(r["job_type"] for r in runs) == ["full", "head", "leaderboard"]
  assert {r["group"] for r in runs} == {str(tmp_path)}  # not under Hydra: the run directory is the experiment
  board = next(r for r in runs if r["job_type"] == "leaderboard")
  assert board["name"] == "leaderboard/run1" and board["config"]["seeds"] == [0, 1]
  assert board["summary"]["leaderboard/_type"] == "table-file" and board["summary"]["rows/nrows"] == 2
  for run in runs:
    if run is board:
      continue
    cfg, summary = run["config"], run["summary"]
    assert run["name"] == f"gap/translate/{run['job_type']}/lr0.01/s{cfg['seed']}"
    assert (cfg["model"], cfg["pretrain"], cfg["finetune"]) == ("gap", "translate", run["job_type"])
    assert cfg["comparison_key"] == "abc123" and cfg["comparison"] == {"canvas.size": 32}
    assert cfg["architecture"] == {"head": "gap"} and cfg["cfg"]["canvas"] == {"size": 32}
    assert summary["in_acc"] == 0.9 and summary["invariance"] == 0.875 and summary["comparison_key"] == "abc123"
    assert summary["similarity_layers/pre_logits"] == 0.25 and "invariance_lost" not in summary  # undefined: left out
    assert summary["location_map"]["_type"] == "image-file" and "comparison/canvas.size" not in summary
    curve = [h for h in run["history"] if "finetune_step" in h]
    assert [h["finetune_step"] for h in curve] == [0, 5]
    assert [h["curve/in_acc"] for h in curve] == [0.1, 0.9]
    assert "curve/invariance" not in curve[0] and curve[1]["curve/invariance"] == 0.875


def test_a_tiny_offline_run_writes_one_wandb_run_per_row_plus_the_leaderboard(tiny_data_dir, tmp_path, monkeypatch):
  from shiftbench.runs.experiment import run_experiment

  monkeypatch.delenv("WANDB_MODE", raising=False)
  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    cfg = compose(
      "config",
      overrides=tiny_overrides(tiny_data_dir, str(tmp_path / "ckpt"))
      + [
        "logger=wandb",
        "logger.mode=offline",
        "model=gap",
        "pretrain.regimes=[scratch]",
        "finetune.scratch_modes=[head,full]",
      ],
    )
  out = tmp_path / "run"
  record = run_experiment(cfg, out)
  runs = offline_runs(out)
  assert len(runs) == len(record["rows"]) + 1 == 3
  assert {r["group"] for r in runs} == {str(out)}
  by_mode = {r["job_type"]: r for r in runs}
  assert set(by_mode) == {"head", "full", "leaderboard"}
  for row in record["rows"]:
    run = by_mode[row["finetune"]]
    assert {k: run["config"][k] for k in ("model", "pretrain", "finetune", "seed")} == {
      "model": "gap",
      "pretrain": "scratch",
      "finetune": row["finetune"],
      "seed": 0,
    }
    assert run["config"]["comparison_key"] == row.get("comparison_key")
    assert run["summary"]["in_acc"] == pytest.approx(row["in_acc"])
    assert [h["finetune_step"] for h in run["history"] if "finetune_step" in h] == [c["step"] for c in row["curve"]]
  assert by_mode["leaderboard"]["summary"]["rows/nrows"] == len(record["rows"])
  assert by_mode["leaderboard"]["summary"]["claims/_type"] == "table-file"


@pytest.mark.parametrize("mode,group", [("MULTIRUN", "multirun/sweep1"), ("RUN", "outputs/run1")])
def test_under_hydra_the_group_is_the_sweep_in_a_multirun_else_the_run(mode, group):
  from hydra.core.hydra_config import HydraConfig
  from hydra.types import RunMode
  from omegaconf import open_dict

  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    cfg = compose(
      "config", overrides=["hydra.sweep.dir=multirun/sweep1", "hydra.run.dir=outputs/run1"], return_hydra_config=True
    )
  with open_dict(cfg):
    cfg.hydra.mode = RunMode[mode]
  HydraConfig.instance().set_config(cfg)
  try:
    assert run_dir.experiment_group("/elsewhere/multirun/sweep1/3") == group  # every job of a sweep: one group
  finally:
    HydraConfig.instance().cfg = None


def test_default_group_outside_hydra_is_the_run_directory(tmp_path):
  deep = tmp_path / ("d" * 200)
  assert run_dir.experiment_group(tmp_path) == str(tmp_path)
  assert run_dir.experiment_group(deep) == str(deep)[-run_dir.GROUP_MAX :]


def test_disabled_tracker_does_nothing(tmp_path):
  tracker = WandbTracker(mode="disabled")
  tracker.start({}, tmp_path)
  tracker.log_row(_row(), None)
  tracker.log_table(["a"], [[1]])
  tracker.finish()
  assert not (tmp_path / "wandb").exists()


def test_unknown_mode_is_rejected():
  with pytest.raises(ValueError, match="unknown logger.mode 'cloud'; allowed: online, offline, disabled"):
    WandbTracker(mode="cloud")
