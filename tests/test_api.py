"""The Python API (`shiftbench.evaluate`, `list_models`, `list_experiments`; docs/api.md) and a user's own model
from a file outside the checkout (docs/examples/my_model.py), through the API and through the CLI, from a
directory outside the checkout; a user model's mistakes as one-line errors."""

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from conftest import tiny_overrides
from flax import nnx
from hydra.core.override_parser.overrides_parser import OverridesParser

import shiftbench
from shiftbench import api
from shiftbench.infra.errors import ConfigError
from shiftbench.models import shift_model
from shiftbench.runs import targets

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "my_model.py"
# The protocol's rows at one rate and seed: scratch/full and translate at every mode (what `smoke` runs).
SMOKE_ROWS = {("scratch", "full"), ("translate", "last"), ("translate", "head"), ("translate", "full")}


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
  """A user's folder outside the checkout holding docs/examples/my_model.py, importable and the current
  directory (as `python` started there would have it)."""
  folder = tmp_path / "me"
  folder.mkdir()
  shutil.copy(EXAMPLE, folder / "my_model.py")
  monkeypatch.chdir(folder)
  monkeypatch.syspath_prepend(str(folder))
  sys.modules.pop("my_model", None)
  yield folder
  sys.modules.pop("my_model", None)


def test_import_shiftbench_is_light_and_lists_the_shipped_presets():
  code = (
    "import sys, shiftbench; models, experiments = shiftbench.list_models(), shiftbench.list_experiments(); "
    "print(models['cnn_fc']); print(experiments['smoke']); print(sorted(experiments)); "
    "print([m for m in ('jax', 'flax', 'hydra', 'pandas') if m in sys.modules])"
  )
  run = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
  )
  assert run.returncode == 0, run.stderr[-2000:]
  cnn_fc, smoke, names, heavy = run.stdout.splitlines()
  assert cnn_fc.startswith("The classic CNN+FC") and cnn_fc.endswith("(every location has its own weights)")
  assert smoke.startswith("Smoke test") and "@package" not in smoke
  assert eval(names) == sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
  assert heavy == "[]"  # the API is imported on first use, and listing presets reads yaml files only


def test_a_model_in_any_form_becomes_the_overrides_the_cli_takes(user_dir):
  from my_model import MyNet

  target = ["+model.MyNet._target_=my_model.MyNet", "+model.MyNet._partial_=true"]
  assert api.model_overrides("gap") == ["model=[gap]"]
  assert api.model_overrides(["cnn_fc", "gap"]) == ["model=[cnn_fc,gap]"]
  assert api.model_overrides("my_model.MyNet") == ["model=[]", *target]
  assert api.model_overrides(MyNet) == ["model=[]", *target]
  assert api.model_overrides(["gap", {"mine": functools.partial(MyNet, widths=[4, 8])}]) == [
    "model=[gap]",
    "+model.mine._target_=my_model.MyNet",
    "+model.mine._partial_=true",
    "+model.mine.widths=[4,8]",
  ]
  assert api.model_overrides({"_target_": MyNet, "hidden": []})[-1] == "+model.MyNet.hidden=[]"
  assert api.model_overrides(None) == []
  with pytest.raises(ConfigError, match=r"model='gpa' is no shipped preset; did you mean 'gap'\?"):
    api.model_overrides("gpa")
  with pytest.raises(ConfigError, match=r"two models are named 'MyNet'"):
    api.model_overrides([MyNet, "my_model.MyNet"])


def test_a_model_a_child_process_cannot_import_is_refused_in_one_line():
  main = type("MyNet", (nnx.Module,), {"__module__": "__main__"})  # a class written in a script or notebook
  with pytest.raises(ConfigError, match=r"model MyNet is defined in __main__ .*put it in a module"):
    api.evaluate(main, "smoke")

  class Local(nnx.Module):
    pass

  with pytest.raises(ConfigError, match=r"defined inside a function; define it at a module's top level"):
    api.evaluate(Local, "smoke")
  with pytest.raises(ConfigError, match=r"model=3 is not a model: give a preset name \(aps, "):
    api.evaluate(3)


@pytest.mark.parametrize(
  "value",
  [None, True, 3, -2, 1e-3, 0.5, float("inf"), "A", "0", "true", "a b", "it's", "/tmp/x", ["0", 1], {"a": [1, None]}],
)
def test_a_python_value_reads_back_as_itself_in_hydras_grammar(value):
  (parsed,) = OverridesParser.create().parse_overrides([f"key={api.hydra_value(value)}"])
  assert parsed.value() == value


def test_settings_are_overrides_and_a_misspelt_key_is_the_doors_one_line(tmp_path):
  assert api.setting_override("seeds", [0, 1]) == "++seeds=[0,1]"
  assert api.setting_override("finetune.learning_rates", (1e-3,)) == "++finetune.learning_rates=[0.001]"
  assert api.setting_override("data", "mnist") == "data=mnist"  # a group's option
  out = tmp_path / "run"
  with pytest.raises(ConfigError, match=r"unknown config key 'finetune.lr' .*did you mean 'finetune.learning_rates'"):
    api.evaluate("gap", "smoke", out, **{"finetune.lr": 1e-3})
  with pytest.raises(ConfigError, match=r"experiment=nosuch: there is no experiment/nosuch.yaml; options: "):
    api.evaluate("gap", "nosuch", out)
  assert not out.exists()  # refused at the door: no run directory


def test_a_user_models_mistakes_are_one_line_before_anything_trains(user_dir, tmp_path):
  out = tmp_path / "run"
  with pytest.raises(ConfigError, match=r"model.MyNet._partial_ is false: a model entry needs _partial_: true"):
    api.evaluate({"_target_": "my_model.MyNet", "_partial_": False}, "smoke", out)
  with pytest.raises(ConfigError, match=r"model.Head: my_model.Head does not take 'canvas_size', 'in_channels'"):
    api.evaluate("my_model.Head", "smoke", out)
  with pytest.raises(ConfigError, match=r"model.nope._target_='my_model.Nope' cannot be imported"):
    api.evaluate({"nope": "my_model.Nope"}, "smoke", out)
  assert not out.exists()

  # Built on abstract shapes: the parts the protocol reads, where the classifier sits, the logits' shape.
  from my_model import Backbone, MyNet

  class NoHead(nnx.Module):
    def __init__(self, *, num_classes, canvas_size, in_channels, rngs):
      self.backbone = Backbone(in_channels, (4,), rngs=rngs)
      self.classifier = nnx.Linear(4, num_classes, rngs=rngs)

  class TwoLogits(MyNet):
    def __call__(self, x):
      return super().__call__(x)[:, :2]

  def check(cls):
    targets.check_models({"m": cls}, {"m": {"_target_": f"my_model.{cls.__name__}"}}, 3, 20, 1)

  check(MyNet)
  with pytest.raises(ConfigError, match=r"model.m: my_model.NoHead does not meet .*it has no head, input_adapter"):
    check(NoHead)
  with pytest.raises(ConfigError, match=r"gives logits of shape \(1, 2\), not \(1, 3\)"):
    check(TwoLogits)
  model = MyNet(num_classes=3, canvas_size=20, in_channels=1, rngs=nnx.Rngs(0))
  del model.head.classifier
  model.head.classifier = lambda x: x  # no parameters: `last` would train nothing
  assert shift_model.mismatches(model, 3, 20, 1)[0].startswith("head.classifier holds no nnx.Param")


@pytest.mark.slow
def test_evaluate_runs_the_example_model_from_outside_the_checkout(user_dir, tiny_data_dir, tmp_path, capsys):
  from my_model import MyNet

  model = functools.partial(MyNet, widths=[4, 8])
  tiny = [o for o in tiny_overrides(tiny_data_dir, str(tmp_path / "ckpt")) if not o.startswith("pretrain.steps=")]
  # 10 pretraining steps: one scan's worth, which its nnx.Conv gradients would make slow on CPU
  result = shiftbench.evaluate(model, "smoke", overrides=[*tiny, "pretrain.steps=10"], seeds=[0])
  rows = result.rows
  assert set(zip(rows["pretrain"], rows["finetune"])) == SMOKE_ROWS and set(rows["model"]) == {"MyNet"}
  assert rows["in_acc"].between(0, 1).all() and len(rows) == 4
  # The CLI's default run directory, under the current directory, with the files a CLI run writes.
  assert result.run_dir.parent.parent == user_dir / "outputs"
  for name in ("results.json", "leaderboard.md", "claims.json", "rows.csv", "index.html", ".hydra/config.yaml"):
    assert (result.run_dir / name).is_file(), name
  log = (result.run_dir / "evaluate.log").read_text()
  assert "MyNet/translate/full" in log
  if jax.default_backend() == "cpu":  # and the log says why (docs/api.md, Speed)
    assert "MyNet (full, translate placement): 1 training step per dispatch, not 10 (steps_per_dispatch=auto)" in log
  record = json.loads((result.run_dir / "results.json").read_text())
  assert record["config"]["model"] == {"MyNet": {"_target_": "my_model.MyNet", "_partial_": True, "widths": [4, 8]}}
  assert "Claims from the literature" in capsys.readouterr().out  # the terminal's summary, as the CLI's
  assert result.command.startswith("shiftbench experiment=smoke 'model=[]' +model.MyNet._target_=my_model.MyNet")


@pytest.mark.slow
def test_the_cli_runs_the_example_model_from_a_users_config_folder(user_dir, tiny_data_dir, tmp_path):
  configs = user_dir / "my_configs" / "model"
  configs.mkdir(parents=True)
  (configs / "mynet.yaml").write_text("mynet:\n  _target_: my_model.MyNet\n  _partial_: true\n  widths: [4, 8]\n")
  args = ["--config-dir", "my_configs", "experiment=smoke", "model=mynet", "pretrain.regimes=[scratch]"]
  args += [*tiny_overrides(tiny_data_dir, str(tmp_path / "ckpt")), "hydra.run.dir=run"]
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), "."])}  # the user's folder importable
  run = subprocess.run(
    [sys.executable, "-m", "shiftbench.cli", *args], capture_output=True, text=True, env=env, cwd=user_dir, timeout=300
  )
  assert run.returncode == 0, run.stderr[-3000:]
  rows = json.loads((user_dir / "run" / "results.json").read_text())["rows"]
  assert [(r["model"], r["pretrain"], r["finetune"]) for r in rows] == [("mynet", "scratch", "full")]


@pytest.mark.parametrize("preset", ["cnn_fc", "aps", "vgg11"])
def test_the_protocol_check_passes_shipped_models(preset):
  """A user's subclass of a shipped network is checked as any user model: the check must pass the presets."""
  from hydra.utils import instantiate

  factory = instantiate(api.compose([f"model={preset}"]).model[preset])
  model = nnx.eval_shape(lambda: factory(num_classes=5, canvas_size=32, in_channels=1, rngs=nnx.Rngs(0)))
  assert shift_model.mismatches(model, 5, 32, 1) == []


def test_evaluate_composes_inside_a_users_own_hydra_app():
  from hydra import initialize_config_module
  from hydra.core.global_hydra import GlobalHydra

  with initialize_config_module("shiftbench.conf", version_base="1.3"):
    outer = GlobalHydra.instance().hydra
    assert list(api.compose(["model=gap"]).model) == ["gap"]
    assert GlobalHydra.instance().hydra is outer  # the app's own Hydra is back
  assert list(api.compose(["experiment=smoke"]).model) == ["cnn_fc"] and not GlobalHydra.instance().is_initialized()
