"""Reference rows (`shiftbench.rows.reference`, `shiftbench.reporting.reference_board`): a run's board ranks
its rows beside the shipped rows of the same protocol, marked, without rerunning them; the files verify.

Synthetic rows with real keys (each a few ms), and the shipped files themselves."""

import gzip
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from shiftbench import __version__
from shiftbench.infra.errors import ConfigError, DataError
from shiftbench.reporting import leaderboard
from shiftbench.rows import comparison, reference
from shiftbench.runs import door

LABEL = f"reference {__version__} 2026-12-07"  # how the board names rows of a file packed on that date

ROOT = Path(__file__).resolve().parent.parent
FC = {"_target_": "shiftbench.models.cnn.CNN", "head": "fc"}
PROTOCOL = {"canvas.size": 32, "finetune.steps": 600, "shiftbench": __version__}
LR = 1e-3


def _row(model, regime, mode, seed, invariance, lr=LR, protocol=PROTOCOL, arch=FC):
  settings = comparison.row_settings(protocol, arch)
  return {
    "model": model,
    "pretrain": regime,
    "finetune": mode,
    "finetune_method": "plain",
    "method_setting": None,
    "finetune_lr": lr,
    "seed": seed,
    "comparison_key": comparison.key_of(settings),
    "protocol_key": comparison.key_of(protocol),
    "in_acc": 0.9,
    "invariance": invariance,
    "val_in_acc": 0.9,
    "curve": [{"step": 0, "invariance": invariance}],
    "location_map": {"ys": [0], "xs": [0], "acc": [[0.9]]},
    "heatmap": "heatmaps/x.png",
    "comparison": settings,
  }


def _record(rows, models=("cnn_fc",)):
  return {
    "config": {"model": dict.fromkeys(models, FC), "paths": {"checkpoint_dir": "/home/me"}},
    "environment": {"versions": {"shiftbench": __version__}},
    "protocol_version": comparison.PROTOCOL_VERSION,
    "datasets": {"pretrain": "A", "finetune": "B"},
    "rows": rows,
  }


def _arms(model, seeds=(0, 1, 2), arms=("scratch/full", "translate/last", "translate/full"), base=0.0, **kw):
  values = {"scratch/full": 0.05, "translate/last": 0.85, "translate/full": 0.45}
  return [_row(model, *arm.split("/"), s, values[arm] + base + 0.01 * s, **kw) for arm in arms for s in seeds]


@pytest.fixture
def reference_set(tmp_path):
  """A reference file of cnn_fc's three arms at two rates, 3 seeds, made as the script makes one."""
  rows = _arms("cnn_fc") + _arms("cnn_fc", lr=1e-2)
  doc = reference.pack("quick", [_record(rows)], "shiftbench experiment=quick logger=none", "2026-12-07T07:00:00Z")
  path = tmp_path / "quick.json.gz"
  path.write_bytes(reference.dumps(doc))
  return reference.load(path)


def _user(**kw):
  """annotated rows of a user's model, `mine`, at rate LR only."""
  from shiftbench.rows import collect

  return collect.annotate(_record(_arms("mine", base=0.1, **kw), models=("mine",)))


def _column(board, name):
  return [r[board.columns.index(name)] for r in board.rows]


def test_a_matching_protocol_ranks_the_run_beside_the_marked_reference_rows(reference_set):
  board = leaderboard.build(_user(), [reference_set])
  assert _column(board, "source") == ["this run", LABEL] * 3
  assert _column(board, "model") == ["mine", "cnn_fc"] * 3  # arm by arm, ranked within each
  assert _column(board, "rank") == ["1/2", "2/2"] * 3
  assert set(_column(board, "finetune_lr")) == {LR}  # the reference's rows at 1e-2 were not run by the user: left out
  assert LABEL in board.csv
  ref = [e for e in board.entries if e["model"] == "cnn_fc"]
  assert all(e.get("location_map") is None and e["curve"] for e in ref)  # arrays dropped, curves kept


def test_another_protocol_gets_no_reference_rows_and_off_leaves_them_out(reference_set):
  other = {**PROTOCOL, "canvas.size": 40}
  for rows, choice in ((_user(protocol=other), [reference_set]), (_user(), False)):
    board = leaderboard.build(rows, choice)
    assert "source" not in board.columns and set(_column(board, "model")) == {"mine"}


def test_a_user_row_wins_over_the_reference_row_with_its_id(reference_set):
  from shiftbench.rows import collect

  mine = collect.annotate(_record([_row("cnn_fc", "translate", "last", 0, 0.99)]))
  rows = reference.merge(mine, [reference_set])
  seed0 = [r for r in rows if (r["pretrain"], r["finetune"], r["seed"]) == ("translate", "last", 0)]
  assert [(r["invariance"], r.get("reference")) for r in seed0] == [(0.99, None)]
  assert len(rows) == 9  # the user's row and the reference's 8 others at the user's rate
  board = leaderboard.build(mine, [reference_set])
  line = [r for r in board.rows if r[board.columns.index("finetune")] == "last"][0]
  assert line[board.columns.index("source")] == f"this run + {LABEL}"


def test_claims_say_which_arms_came_from_reference_rows(reference_set):
  from shiftbench.rows import collect

  mine = collect.annotate(_record(_arms("cnn_fc", arms=("translate/last", "translate/full"), base=0.02)))
  claims = {(c.id, c.scratch_at): c for c in leaderboard.build(mine, [reference_set]).claims}
  c2 = claims[("C2", "best_validation")]
  assert f"cnn_fc scratch/full@0.001 from {LABEL}" in c2.note
  assert "translate/last" not in c2.note and "from reference" in c2.effect
  assert "reference" not in claims[("C3a", None)].note  # both arms the user's own
  assert claims[("C1", "best_validation")].note == f"every arm from {LABEL}"
  assert claims[("C2c", None)].outcome == "not_run" and not claims[("C2c", None)].note  # judged on nothing
  assert "from reference" not in json.dumps(leaderboard.build(mine).claims[0].note)


def test_a_file_that_does_not_verify_or_mixes_protocols_is_refused(reference_set, tmp_path):
  doc = json.loads(gzip.decompress(Path(reference_set.path).read_bytes()))
  doc["rows"][0]["invariance"] = 0.99
  tampered = tmp_path / "tampered.json.gz"
  tampered.write_bytes(gzip.compress(json.dumps(doc).encode()))
  with pytest.raises(DataError, match=r"tampered.json.gz does not verify: its content hashes to \w+, not") as e:
    reference.load(tampered)
  assert "\n" not in str(e.value)
  mixed = _arms("cnn_fc") + [_row("cnn_fc", "scratch", "full", 9, 0.1, protocol={**PROTOCOL, "canvas.size": 40})]
  with pytest.raises(DataError, match="one reference file holds one protocol"):
    reference.pack("quick", [_record(mixed)], "shiftbench experiment=quick")
  bad = _arms("cnn_fc")
  bad[0]["comparison_key"] = "0123456789ab"
  with pytest.raises(DataError, match="comparison_key 0123456789ab is not its settings' key"):
    reference.pack("quick", [_record(bad)], "shiftbench experiment=quick")


def test_the_switch_is_a_config_key_outside_every_key_and_a_cli_flag(reference_set, tmp_path, monkeypatch):
  with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
    assert door.check(compose("config", overrides=["reference=false"]))["reference"] is False
    with pytest.raises(ConfigError, match="reference"):
      door.check(compose("config", overrides=["reference=maybe"]))
  assert comparison.ignored("reference")
  from shiftbench.runs import run_dir  # a run resumes whatever the switch, and whether its config had the key

  done = tmp_path / "done" / "results.json"
  done.parent.mkdir()
  done.write_text(json.dumps({**_record(_arms("mine"), models=("mine",)), "config": {"seeds": [0]}}))
  assert len(run_dir.resumable_rows(done, {"seeds": [0], "reference": False})) == 9
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "results.json").write_text(json.dumps(_record(_arms("mine"), models=("mine",))))
  monkeypatch.setattr(reference, "shipped", lambda: [reference_set])
  for flags, marked in (([], True), (["--no-reference"], False)):
    leaderboard.main([str(tmp_path / "run"), "--out", str(tmp_path / "board"), "--no-figures", *flags])
    assert (f"reference {__version__}" in (tmp_path / "board" / "leaderboard.csv").read_text()) is marked


def _key_today(preset: str, shipped: reference.ReferenceSet) -> str:
  """The protocol key `experiment=<preset>` computes today, with the file's own data hashes (computing them
  would render the glyphs)."""
  with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
    config = door.check(compose("config", overrides=[f"experiment={preset}"]))
  hashes = {side: shipped.record["datasets"][f"{side}_sha256"] for side in ("pretrain", "finetune")}
  return comparison.key_of(comparison.protocol_settings(config, hashes))


def test_the_shipped_files_verify_and_have_the_keys_their_presets_compute_today():
  """A protocol change (a setting, or the version in the key) that forgets to remake the files fails here."""
  assert reference.shipped_names() == [f"{p}{reference.SUFFIX}" for p in reference.PRESETS]
  shipped = {s.preset: s for s in reference.shipped()}
  quick = shipped["quick"]
  assert quick.command.startswith("shiftbench experiment=quick") and quick.shiftbench and quick.made
  assert all("location_map" not in r for s in shipped.values() for r in s.record["rows"])
  assert _key_today("quick", quick) == quick.protocol_key
  # reproduce and methods run quick's protocol by design (conf/experiment/*.yaml): one key for the three
  assert {shipped[p].protocol_key for p in ("quick", "reproduce", "methods")} == {quick.protocol_key}
  # reproduce_stop is another protocol (the stopping rule, its cap and curve points): its own key
  stop = shipped["reproduce_stop"]
  assert stop.command.startswith("shiftbench experiment=reproduce_stop")
  assert _key_today("reproduce_stop", stop) == stop.protocol_key != quick.protocol_key


def test_the_page_says_which_lines_are_reference_rows_and_maps_only_the_runs_own(reference_set, tmp_path):
  from shiftbench.reporting import page

  board = leaderboard.build(_user(), [reference_set])
  html = page.write_report(board, tmp_path).read_text()
  assert "shipped reference rows" in html and html.count(LABEL) >= 4
  assert "9 from 1 run" in html  # what ran: the run's 9 rows, not the 9 reference rows beside them
  from matplotlib import image

  grid = image.imread(tmp_path / "location_maps.png")  # saved at 144 dpi: one row of maps is 434 px high
  assert grid.shape[0] < 600  # one row of maps (the run's model), no blank row for the reference model's


def test_a_sweep_with_the_switch_off_makes_its_board_without_reference_rows(tmp_path):
  from shiftbench import cli

  (tmp_path / "0" / ".hydra").mkdir(parents=True)
  (tmp_path / "0" / ".hydra" / "config.yaml").write_text("reference: false\n")
  assert cli.sweep_board(tmp_path, reference=False).endswith("--no-reference")  # the command it gives for later
  assert not cli.sweep_board(tmp_path).endswith("--no-reference")
