"""A multirun ends with one board and one claims report over all its jobs (`cli.SweepBoard`)."""

import json
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from shiftbench import cli

CONF = Path(__file__).resolve().parent.parent / "conf"


def _job(sweep: Path, num: int, results: Path | None) -> None:
  (sweep / str(num) / ".hydra").mkdir(parents=True)
  (sweep / str(num) / ".hydra" / "config.yaml").write_text("seeds: [0]\n")
  if results is not None:
    shutil.copy(results, sweep / str(num) / "results.json")


def test_a_multirun_ends_with_one_board_over_its_jobs_and_names_the_unfinished_ones(tiny_results, tmp_path, capsys):
  sweep = tmp_path / "multirun" / "2026-12-07" / "08-00-00"
  _job(sweep, 0, tiny_results / "seed0" / "results.json")
  _job(sweep, 1, tiny_results / "seed1" / "results.json")
  _job(sweep, 2, None)  # failed, or still running when the launcher returned
  cli.SweepBoard().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
  said = capsys.readouterr().out
  board = json.loads((sweep / "leaderboard" / "leaderboard.json").read_text())
  assert {tuple(e["seeds"]) for e in board} == {(0, 1)}  # one board: both jobs' seeds in each line
  assert (sweep / "leaderboard" / "claims.json").is_file() and (sweep / "leaderboard" / "index.html").is_file()
  assert f"the sweep's board and claims over 2 jobs: {sweep}/leaderboard/" in said
  assert "1 of 3 jobs have no results.json yet: 2" in said
  assert f"shiftbench-leaderboard {sweep} --out {sweep}/leaderboard" in said


def test_a_sweep_with_no_results_yet_prints_the_command_that_makes_its_board(tmp_path):
  _job(tmp_path, 0, None)
  said = cli.sweep_board(tmp_path)
  assert said.endswith(f"make the sweep's board with: shiftbench-leaderboard {tmp_path} --out {tmp_path}/leaderboard")
  assert not (tmp_path / "leaderboard").exists()


def test_the_root_config_ends_every_multirun_with_the_sweep_board():
  callbacks = OmegaConf.load(CONF / "config.yaml").hydra.callbacks
  assert callbacks.sweep_board._target_ == "shiftbench.cli.SweepBoard"


def test_a_multirun_whose_job_failed_still_prints_the_command_before_its_error_line(tmp_path, monkeypatch, capsys):
  sweep = tmp_path / "sweep"
  _job(sweep, 0, None)

  def failing_multirun() -> None:  # Hydra skips on_multirun_end when a job raised
    cli.SweepBoard().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    raise ValueError("a job failed")

  monkeypatch.setattr(cli, "_main", failing_multirun)
  monkeypatch.setattr(cli, "_SWEEPS", type(cli._SWEEPS)())  # none from another test
  monkeypatch.setattr(cli, "_errors", [])
  monkeypatch.setattr(cli, "_exit", lambda code: None)
  cli.main()
  out, err = capsys.readouterr()
  assert f"make the sweep's board with: shiftbench-leaderboard {sweep} --out {sweep}/leaderboard" in out
  assert err.strip().splitlines()[-1] == "error: ValueError: a job failed"


def test_a_failed_multirun_with_reference_false_makes_its_board_without_the_reference_rows(
  tmp_path, monkeypatch, capsys
):
  from shiftbench.reporting import leaderboard

  sweep = tmp_path / "sweep"
  _job(sweep, 0, None)
  (sweep / "0" / "results.json").write_text("{}")  # finished: the board is made over it
  _job(sweep, 1, None)
  config = OmegaConf.create({"reference": False, "hydra": {"sweep": {"dir": str(sweep)}}})

  def failing_multirun() -> None:  # Hydra skips on_multirun_end when a job raised
    cli.SweepBoard().on_multirun_start(config)
    raise ValueError("a job failed")

  boards = []
  monkeypatch.setattr(leaderboard, "main", boards.append)
  monkeypatch.setattr(cli, "_main", failing_multirun)
  monkeypatch.setattr(cli, "_SWEEPS", type(cli._SWEEPS)())  # none from another test
  monkeypatch.setattr(cli, "_errors", [])
  monkeypatch.setattr(cli, "_exit", lambda code: None)
  cli.main()
  assert boards == [[str(sweep), "--out", str(sweep / "leaderboard"), "--no-reference"]]  # as the callback's
  assert f"--out {sweep}/leaderboard --no-reference" in capsys.readouterr().out
