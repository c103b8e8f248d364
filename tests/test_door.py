"""The config door, through the real CLI: a mistake on the command line ends the process with exit code 1 and
one last line, `error: ...`, naming the key and the bad value, with no traceback anywhere; the mistakes the
schema catches (and Hydra's own) are reported before JAX is imported, and those and a target's unknown
argument before the run directory exists.

Most mistakes run in one process that calls `shiftbench.cli.main` once per mistake (Hydra's start is the cost
of a subprocess, ~1-2 s each); a few run as `python -m shiftbench.cli` itself, and the JAX check there is an
atexit hook that writes `'jax' in sys.modules` to a file.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import tiny_overrides

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
ENV.pop("HYDRA_FULL_ERROR", None)

# (overrides, what the last line must say: the key and the bad value). The schema's, in the order they run.
SCHEMA = [
  (["+finetune.lr=1e-3"], "unknown config key 'finetune.lr'", "finetune.lr=0.001", "finetune.learning_rates"),
  (["finetune.lr=1e-3"], "unknown config key 'finetune.lr'", "finetune.lr=0.001"),  # no +: unknown all the same
  (["+pretrain.lr=0.5"], "pretrain.lr=0.5", "did you mean 'pretrain.optimizer.learning_rate'"),
  (["+canvas.objectsize=20"], "canvas.objectsize=20", "did you mean 'canvas.object_size'"),
  (["+eval.max_object=10"], "eval.max_object=10", "did you mean 'eval.max_objects'"),
  (["finetune.steps=abc"], "finetune.steps must be an integer >= 1, got 'abc'"),
  (["finetune.steps=1.5"], "finetune.steps", "got 1.5"),
  (["finetune.steps=0"], "finetune.steps must be an integer >= 1, got 0"),
  (["finetune.batch_size=-8"], "finetune.batch_size", "got -8"),
  (["seeds=x"], "seeds must be a list of integers, got 'x'"),
  (["canvas.object_size=100"], "canvas.object_size=100 is larger than canvas_size=20"),
  (["eval.validation_fraction=1.5"], "eval.validation_fraction must be a number in [0, 1), got 1.5"),
  (["eval.split=train"], "eval.split", "got 'train'"),
  (["eval.batch_size=big"], "eval.batch_size", "got 'big'"),
  (["eval.max_objects=0"], "eval.max_objects", "got 0"),
  (["pretrain.regimes=[bogus]"], "unknown pretrain regime 'bogus' in pretrain.regimes", "allowed: scratch"),
  (["finetune.modes=[middle]"], "unknown fine-tune mode 'middle' in finetune.modes", "allowed: last, head, full"),
  (["finetune.modes=last"], "finetune.modes must be a non-empty list", "got 'last'"),
  (["finetune.scratch_modes=[last]"], "finetune.scratch_modes", "'last'", "allowed: full, head"),
  (["pretrain.jitter=-1"], "pretrain.jitter must be an integer >= 0, got -1"),
  (["pretrain.steps_per_dispatch=0"], "pretrain.steps_per_dispatch", "got 0"),
  (["finetune.location=[30,0]"], "finetune.location=[30, 0]", "puts the object off the canvas"),
  (["finetune.location=[1,x]"], "finetune.location", "[1, 'x']"),
  (["finetune.curve_steps=[0,5]"], "finetune.curve_steps", "got [0, 5]"),
  (["finetune.learning_rates=[1e-3,-1]"], "finetune.learning_rates entries must be numbers > 0, got -1"),
  (["pretrain.optimizer.learning_rate=-1"], "pretrain.optimizer.learning_rate must be > 0, got -1"),
  (["arms={cnn_fc: [translate/everything]}"], "arms.cnn_fc entry 'translate/everything'"),
  (["model=gap", "model.gap.widths=[0]"], "model.gap.widths", "got 0"),
  (["overwrite=maybe"], "overwrite must be true or false, got 'maybe'"),
  (["data.allow_overlap=perhaps"], "data.allow_overlap", "got 'perhaps'"),
  (["+finetune.until_accuracy.threshold=2", "+finetune.until_accuracy.window=10"], "threshold 2.0"),
  (["+seedz=[1]"], "unknown config key 'seedz'", "did you mean 'seeds'"),  # the top level keeps its words
]
# Hydra's own (the command line itself): also before JAX.
HYDRA = [
  (["model=nosuch"], "model=nosuch", "options: aps, blurpool"),
  (["experiment=quik"], "experiment=quik", "did you mean experiment=quick"),
  (["finetune.steps=["], "cannot parse the override 'finetune.steps=['"),
  (["+finetune.steps=5"], "finetune.steps=5", "An item is already at 'finetune.steps'"),
  (["model=gap", "model.gap.blur_size=3"], "model.gap.blur_size=3", "add it: +model.gap.blur_size=3"),
  (["~finetune.nosuch"], "finetune.nosuch", "does not exist"),
]
# A `_target_`'s own arguments, checked against its signature: once the targets are imported (JAX).
TARGETS = [
  (["+eval.metrics.consistency.dd=3"], "eval.metrics.consistency.dd=3", "ShiftConsistency", "did you mean 'd'"),
  (["model=gap", "+model.gap.widht=[4]"], "model.gap.widht=[4]", "did you mean 'widths'"),
  (["+finetune.optimizer.lr=1e-3"], "finetune.optimizer.lr=0.001", "did you mean 'learning_rate'"),
  (["+data.pretrain.font=x"], "data.pretrain.font='x'", "shiftbench.data.load_glyphs"),
]
# Refused when the settings are built or the data loaded: a target's own check of a value, or what needs
# several built things (the run directory is open by then).
BUILT = [
  (["eval.metrics.worst_of_k.k=0"], "eval.metrics.worst_of_k", "got 0"),
  (["logger.mode=cloud"], "logger", "'cloud'"),
  # The registry of methods (`shiftbench.methods.BUILTIN`, which a user's code may extend) imports JAX.
  (["finetune.methods=[plain,sgd]"], "unknown fine-tune method 'sgd' in finetune.methods"),
  (["finetune.methods=[plain,lpft,lpft]"], "finetune.methods", "'lpft' twice"),
  (["finetune.modes=[head,full]", "finetune.methods=[plain,wise]"], "method 'wise'", "finetune.modes"),
  (["model=vgg11", "+tv_width=0.0625", "pretrain.regimes=[imagenet]"], "pretrain.weights", "'vgg11'"),
  (["model=vgg11", "+tv_width=0.0625", "pretrain.regimes=[imagenet]", "pretrain.weights=/no.pth"], "/no.pth"),
  (["data.pretrain.charset=greek"], "data.pretrain (shiftbench.data.load_glyphs)", "'greek'"),
  (["data.pretrain.classes=['0','1',x]"], "data.pretrain (shiftbench.data.load_glyphs)", "'x'"),
]

# Calls the CLI's `main` once per mistake in this one process. Past the door a run builds its settings and
# loads its data, and stops there: a mistake nothing refused fails loudly instead of training.
DRIVER = """
import contextlib, io, json, sys
from shiftbench import cli
from shiftbench.infra import errors

def settings_and_data(cfg, output_dir):
  from shiftbench.runs import protocol_data
  from shiftbench.runs.settings import Settings

  protocol_data.load_datasets(Settings.from_config(cfg))
  raise AssertionError("nothing refused this config")

refuse_or_run = cli._refuse_or_run
cli._refuse_or_run = lambda cfg, output_dir, run: refuse_or_run(cfg, output_dir, settings_and_data)
out = []
for argv in json.loads(sys.argv[1]):
  errors.reported.clear()
  err, code = io.StringIO(), None
  sys.argv = ["shiftbench", *argv]
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
    try:
      cli.main()
    except SystemExit as e:
      code = e.code
  out.append({"code": code, "output": err.getvalue(), "jax": "jax" in sys.modules})
print(json.dumps(out))
"""


def _base(tmp_path: Path, i: int) -> list[str]:
  """A valid tiny run (so only the mistake is wrong) in its own run directory."""
  return [*tiny_overrides(str(tmp_path / "data"), str(tmp_path / "ckpt")), f"hydra.run.dir={tmp_path / f'run{i}'}"]


def _problems(mistake: list[str], said: tuple[str, ...], result: dict, stage: str, run_dir: Path) -> list[str]:
  lines = [line for line in result["output"].splitlines() if line.strip()]
  last = lines[-1] if lines else ""
  problems = []
  if result["code"] in (0, None):
    problems.append(f"exit code {result['code']}")
  if not last.startswith("error: ") or any(s not in last for s in said):
    problems.append(f"last line {last!r} does not say {said}")
  if "Traceback" in result["output"]:
    problems.append("a traceback")
  if stage == "door" and result["jax"]:
    problems.append("jax was imported")
  if stage != "built" and run_dir.exists():
    problems.append(f"the run directory {run_dir} was made")
  return [f"{' '.join(mistake)}: {p}" for p in problems]


def test_each_mistake_is_one_error_line_naming_the_key_and_value_and_the_schemas_come_before_jax(tmp_path):
  stages = [("door", SCHEMA + HYDRA), ("targets", TARGETS), ("built", BUILT)]  # in this order: JAX comes in once
  cases = [(mistake, said, stage) for stage, table in stages for mistake, *said in table]
  assert len(SCHEMA + HYDRA) >= 25
  argvs = [_base(tmp_path, i) + mistake for i, (mistake, _, _) in enumerate(cases)]
  run = subprocess.run(
    [sys.executable, "-c", DRIVER, json.dumps(argvs)], capture_output=True, text=True, env=ENV, timeout=300
  )
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.loads(run.stdout.splitlines()[-1])
  problems = []
  for i, ((mistake, said, stage), result) in enumerate(zip(cases, results, strict=True)):
    problems += _problems(mistake, tuple(said), result, stage, tmp_path / f"run{i}")
  assert not problems, "\n".join(problems)


# `python -m shiftbench.cli` itself, with an atexit hook that writes whether jax was imported.
WRAPPER = (
  "import atexit, os, runpy, sys; "
  "atexit.register(lambda: open(os.environ['JAX_MARK'], 'w').write(str('jax' in sys.modules))); "
  "sys.argv = ['shiftbench', *sys.argv[1:]]; runpy.run_module('shiftbench.cli', run_name='__main__')"
)


def _cli(tmp_path: Path, args: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, bool]:
  mark = tmp_path / "jax_imported"
  run = subprocess.run(
    [sys.executable, "-c", WRAPPER, *args, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
    capture_output=True,
    text=True,
    env={**(env or ENV), "JAX_MARK": str(mark)},
    timeout=120,
  )
  return run, mark.read_text() == "True"


def _last_line(text: str) -> str:
  lines = [line for line in text.splitlines() if line.strip()]
  return lines[-1] if lines else ""


def test_the_cli_refuses_a_nested_unknown_key_in_one_line_without_importing_jax(tmp_path):
  run, jax_imported = _cli(tmp_path, ["+pretrain.lr=0.5"])
  assert run.returncode == 1 and not jax_imported
  assert _last_line(run.stderr).startswith("error: unknown config key 'pretrain.lr'")
  assert "Traceback" not in run.stderr + run.stdout and len(run.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "run").exists()


def test_hydra_full_error_still_shows_the_traceback_above_the_cause(tmp_path):
  run, jax_imported = _cli(tmp_path, ["finetune.steps=abc"], env={**ENV, "HYDRA_FULL_ERROR": "1"})
  assert run.returncode == 1 and not jax_imported
  assert "Traceback" in run.stderr
  assert _last_line(run.stderr) == "error: finetune.steps must be an integer >= 1, got 'abc'"


def test_a_targets_unknown_argument_through_the_cli_is_one_line(tmp_path):
  run, _ = _cli(tmp_path, ["model=gap", "+model.gap.widht=[4]"])
  assert run.returncode == 1 and "Traceback" not in run.stderr + run.stdout
  assert _last_line(run.stderr).startswith("error: model.gap.widht=[4]: shiftbench.models.ShiftNet takes no argument")


def test_the_slurm_launcher_without_slurm_names_the_launchers_that_work(tmp_path):
  env = {**ENV, "PATH": str(Path(sys.executable).parent)}  # python, and no sbatch or srun
  run, jax_imported = _cli(
    tmp_path, ["-m", "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path / 'sweep'}", "seeds=[0],[1]"], env=env
  )
  assert run.returncode == 1 and not jax_imported and "Traceback" not in run.stderr
  last = _last_line(run.stderr)
  assert last.startswith("error: hydra/launcher=slurm submits the jobs to SLURM, but sbatch and srun are not on PATH")
  assert "hydra/launcher=local" in last and not (tmp_path / "sweep").exists()


def test_the_leaderboards_mistakes_are_one_error_line(tmp_path):
  (tmp_path / "empty").mkdir()
  (tmp_path / "file").write_text("x")
  for args, said in [
    ([str(tmp_path / "nowhere")], f"error: no such results file or directory: {tmp_path / 'nowhere'}"),
    ([str(tmp_path / "empty")], f"error: no results.json rows found under: {tmp_path / 'empty'}"),
  ]:
    run = subprocess.run(
      [sys.executable, "-m", "shiftbench.reporting.leaderboard", *args], capture_output=True, text=True, env=ENV
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert _last_line(run.stderr).startswith(said)
