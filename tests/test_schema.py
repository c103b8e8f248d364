"""The row schema, the config door and the run directory: each fact in one place, each check done once."""

import json
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from shiftbench.evaluators.suite import Evaluator
from shiftbench.infra.errors import ConfigError
from shiftbench.rows import comparison, schema
from shiftbench.runs import run_dir
from shiftbench.runs.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _compose(overrides=()):
  with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
    return compose("config", overrides=["logger=none", *overrides])


def _row(model, regime, mode, seed, invariance, key="k"):
  return {
    "model": model,
    "pretrain": regime,
    "finetune": mode,
    "finetune_lr": 1e-3,
    "seed": seed,
    "invariance": invariance,
    "comparison_key": key,
    "invariance_lost": None,
  }


def test_identity_fields_are_named_in_the_schema_only():
  spelled = re.compile(r"""["']model["'],\s*["']pretrain["'],\s*["']finetune["']""")
  found = [p.name for p in (ROOT / "shiftbench").rglob("*.py") if spelled.search(p.read_text())]
  assert found == [], f"a row's identity is spelled out in {found}; read schema.IDENTITY / schema.RowId"
  dimensions = ("model", "pretrain", "finetune", "finetune_method", "method_setting", "finetune_lr")
  assert (*dimensions, "seed") == schema.IDENTITY
  assert dimensions == schema.DIMENSIONS
  assert schema.GROUP[-1] == "comparison_key"


def test_row_ids_name_rows_and_find_their_siblings():
  rid = schema.RowId.of(_row("cnn_fc", "translate", "full", 2, 0.1))
  assert rid.name() == "cnn_fc/translate/full/lr0.001/s2" and rid.name("_") == "cnn_fc_translate_full_lr0.001_s2"
  assert rid.sibling(finetune="last") == ("cnn_fc", "translate", "last", "plain", None, 1e-3, 2)
  # A row from before methods existed is a plain row; a method's row names its method and setting.
  assert rid == schema.RowId.plain("cnn_fc", "translate", "full", 1e-3, 2)
  wise = rid.sibling(finetune_method="wise", method_setting=0.5)
  assert wise.name() == "cnn_fc/translate/full/wise0.5/lr0.001/s2" and wise.method_label == "wise0.5"
  assert wise.plain_sibling("last") == rid.sibling(finetune="last")
  assert schema.RowId.of({**_row("m", "translate", "full", 0, 0.1), **wise._asdict()}) == wise


def test_rows_of_0_6_0_read_back_with_the_same_identities():
  """0.6.0 kept WiSE-FT's alpha and L2-SP's beta in fields of their own: they are the row's setting, and
  its name, group and unique key are those of the same row written today."""
  row = _row("cnn_fc", "translate", "full", 2, 0.1)
  for old, method in (("wise_alpha", "wise"), ("l2sp_beta", "l2sp")):
    written = {**row, "finetune_method": method, "wise_alpha": None, "l2sp_beta": None, old: 0.5}
    today = {**row, "finetune_method": method, "method_setting": 0.5}
    assert schema.identity(written) == schema.identity(today) == (*schema.identity(row)[:3], method, 0.5, 1e-3, 2)
    assert schema.identity(written).name() == f"cnn_fc/translate/full/{method}0.5/lr0.001/s2"
    assert schema.unique(written) == schema.unique(today) and schema.group(written) == schema.group(today)
    assert "wise_alpha" not in schema.scalar_metrics({**written, "wise_alpha": 0.5})  # identity, not a metric
  plain = {**row, "finetune_method": "plain", "wise_alpha": None, "l2sp_beta": None}
  assert schema.identity(plain) == schema.identity(row) and schema.identity(row).method_setting is None


def test_a_results_file_of_0_6_0_resumes_and_collects_by_todays_identities(tmp_path):
  from shiftbench import __version__
  from shiftbench.rows import collect

  config = {"seeds": [2]}
  row = {**_row("cnn_fc", "translate", "full", 2, 0.1), "finetune_method": "l2sp", "wise_alpha": None}
  record = {
    "config": config,
    "environment": {"versions": {"shiftbench": __version__}},
    "protocol_version": comparison.PROTOCOL_VERSION,
    "rows": [{**row, "l2sp_beta": 0.1}],
  }
  (tmp_path / "results.json").write_text(json.dumps(record))
  today = schema.RowId.plain("cnn_fc", "translate", "full", 1e-3, 2)._replace(
    finetune_method="l2sp", method_setting=0.1
  )
  assert list(run_dir.resumable_rows(tmp_path / "results.json", config)) == [today]
  (read,) = collect.collect([tmp_path])
  assert schema.identity(read) == today and "method_info" not in read  # 0.6.0 wrote no method descriptions
  # The same row written today (with its method's description) is the same row: one copy is kept.
  (tmp_path / "new").mkdir()
  new = {**record, "rows": [{**row, "method_setting": 0.1}], "methods": {"l2sp": {"name": "l2sp", "title": "L2-SP"}}}
  del new["rows"][0]["wise_alpha"]
  (tmp_path / "new" / "results.json").write_text(json.dumps(new))
  (kept,) = collect.collect([tmp_path / "results.json", tmp_path / "new"])
  assert schema.identity(kept) == today


def test_a_methods_row_loses_invariance_against_plain_last():
  from shiftbench.rows import comparison

  settings = {"data.finetune.sha256": "abc"}
  plain = {"comparison": settings, "comparison_key": comparison.key_of(settings)}
  rows = [{**_row("m", "translate", m, 0, v), **plain} for m, v in (("last", 0.9), ("full", 0.25))]
  own = {**settings, "method.classifier_ratio": 0.1}  # its own setting: another comparison key
  rows.append({**rows[1], "finetune_method": "l2sp", "method_setting": 0.1, "invariance": 0.5, "comparison": own})
  rows[2]["comparison_key"] = comparison.key_of(own)
  schema.fill_invariance_lost(rows)
  assert [r["invariance_lost"] for r in rows] == [None, 0.65, 0.4]  # last: the reference, none


def test_invariance_lost_pairs_last_and_full_of_one_experiment_model_regime_and_seed():
  rows = [
    _row("m", "translate", "last", 0, 0.9),
    _row("m", "translate", "full", 0, 0.25),
    _row("m", "translate", "full", 1, 0.5),  # no `last` row of seed 1
    _row("m", "translate", "last", 0, 0.1, key="other"),  # another experiment's: never paired with key k
    _row("m", "translate", "head", 0, 0.4),
  ]
  schema.fill_invariance_lost(rows)
  assert [r["invariance_lost"] for r in rows] == [None, 0.65, None, None, 0.5]  # head: its own loss
  rows[1]["invariance"] = None  # full's own is undefined: nothing to subtract, and an older value is dropped
  schema.fill_invariance_lost(rows)
  assert [r["invariance_lost"] for r in rows] == [None, None, None, None, 0.5]
  rows[0]["invariance"] = None  # last's is undefined: no row of the seed has a loss
  schema.fill_invariance_lost(rows)
  assert all(r["invariance_lost"] is None for r in rows)


def test_rows_sort_like_the_protocol():
  full = _row("b", "translate", "full", 0, 0)
  entries = [
    {**full, "finetune_method": "mine"},  # a user's method: after the built-in ones
    {**full, "finetune_method": "wise", "method_setting": 0.5},
    {**full, "finetune_method": "wise", "wise_alpha": 0.0},  # a 0.6.0 row: sorted by the same setting
    full,
    _row("a", "translate", "last", 0, 0),
    _row("b", "scratch", "full", 0, 0),
  ]
  key = schema.sort_key({"b": 0, "a": 1})
  assert [schema.identity(e)[:5] for e in sorted(entries, key=key)] == [
    ("b", "scratch", "full", "plain", None),
    ("b", "translate", "full", "plain", None),
    ("b", "translate", "full", "wise", 0.0),
    ("b", "translate", "full", "wise", 0.5),
    ("b", "translate", "full", "mine", None),
    ("a", "translate", "last", "plain", None),
  ]


def test_a_plain_dict_gets_the_same_checks_as_a_dictconfig():
  bad = _compose(["finetune.optimizer.learning_rate=-1"])
  for cfg in (bad, OmegaConf.to_container(bad)):
    with pytest.raises(ConfigError, match="finetune.optimizer.learning_rate must be > 0"):
      Settings.from_config(cfg)
  typo = OmegaConf.to_container(_compose())
  typo["seedz"] = [0]
  with pytest.raises(ConfigError, match="unknown config key 'seedz'"):
    Settings.from_config(typo)


def test_settings_build_every_target_once():
  s = Settings.from_config(_compose(["model=[gap,cnn_fc]"]))
  assert list(s.factories) == ["gap", "cnn_fc"] and all(callable(f) for f in s.factories.values())
  assert set(s.transforms) == {"pretrain", "finetune"} and hasattr(s.transforms["pretrain"], "update")
  assert all(hasattr(t, "update") for t in s.transforms["finetune"].values())  # one optimiser per fine-tune rate
  assert s.evaluators and all(isinstance(e, Evaluator) for e in s.evaluators.values())
  assert set(s.loaders) == {"pretrain", "finetune"} and s.tracker.mode == "disabled"


def test_the_run_directory_is_opened_once_and_released(tmp_path):
  config = {"seeds": [0]}
  first = run_dir.open_run_dir(tmp_path / "run", config)
  try:
    assert run_dir.open_run_dir(tmp_path / "run", config) is first  # the task after the CLI: no second check
    with run_dir.opened_run_dir(tmp_path / "run", config) as again:
      assert again is first
    assert run_dir.open_run_dir(tmp_path / "run", config) is first  # still open: its opener closes it
  finally:
    run_dir.close_run_dir(tmp_path / "run")
  with run_dir.opened_run_dir(tmp_path / "run", config) as reopened:
    assert reopened is not first and reopened.done == {}
