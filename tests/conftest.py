"""Shared test settings: CPU only, no network, tiny data, no wandb."""

import functools
import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Most of the suite's time is XLA compiling tiny programs, and most of that is LLVM optimising them. The tests
# check what the code computes (known answers, identities between two paths, properties), not what XLA's
# optimisations make of it, so they compile at -O0: ~35% less time (docs/development.md). Set before jax is
# imported, here and in every subprocess a test starts (they inherit the environment).
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()
os.environ["WANDB_MODE"] = "disabled"
# Nothing a test runs may write under the user's home: checkpoints and the JAX compilation cache
# default to $SHIFTBENCH_CACHE, so point it at a throwaway directory.
os.environ["SHIFTBENCH_CACHE"] = tempfile.mkdtemp(prefix="shiftbench-test-cache-")
# JAX's compilation cache, shared by every test of this session and by the pytest-xdist workers (a
# program is keyed by its own HLO, so sharing cannot mix results): most tests run the same tiny programs,
# and compiling them is most of the suite's time on CPU.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
COMPILE_CACHE = (
  os.path.join(tempfile.gettempdir(), f"shiftbench-test-jax-cache-{_RUN}")
  if _RUN
  else os.path.join(os.environ["SHIFTBENCH_CACHE"], "jax_cache")
)

import pytest  # noqa: E402


def pytest_collection_modifyitems(items):
  """End-to-end runs first: with the suite spread over workers, a long test started last would keep
  one worker busy while the others sit idle."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order otherwise


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """One glyph cache for the whole session, so each tiny dataset is generated once."""
  return str(tmp_path_factory.mktemp("tfds"))


# Overrides that make the protocol run in seconds: 3 classes x few objects, 20px canvas, few steps.
def tiny_overrides(data_dir: str, checkpoint_dir: str) -> list[str]:
  return [
    "logger=none",
    "seeds=[0]",  # the default run has three
    f"data.data_dir={data_dir}",
    f"paths.checkpoint_dir={checkpoint_dir}",
    "compile_cache=true",
    f"paths.compile_cache_dir={COMPILE_CACHE}",
    "canvas.size=20",
    "canvas.object_size=8",
    "widths=[4,8]",
    "data.pretrain.classes=['0','1','2']",
    "data.pretrain.train_per_class=20",
    "data.pretrain.test_per_class=6",
    "data.finetune.classes=[A,B,C]",
    "data.finetune.train_per_class=20",
    "data.finetune.test_per_class=6",
    "data.pretrain.image_size=16",
    "data.finetune.image_size=16",
    "pretrain.steps=6",
    "pretrain.batch_size=8",
    "finetune.steps=4",
    "finetune.batch_size=8",
    "finetune.eval_every=2",
    "finetune.learning_rates=[1e-2]",  # one rate: a test that needs the rate dimension asks for two
    "eval.grid_stride=6",
    "eval.curve_objects=6",
  ]


def tiny_config(data_dir: str, root, extra: list[str]):
  """The composed config of a tiny run (`tiny_overrides`, its checkpoints under `root`) with `extra`."""
  from pathlib import Path

  from hydra import compose, initialize_config_dir

  conf = Path(__file__).resolve().parent.parent / "conf"
  with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
    return compose("config", overrides=tiny_overrides(data_dir, str(Path(root) / "ckpt")) + extra)


@pytest.fixture(scope="session")
def methods_protocol(tiny_data_dir, tmp_path_factory):
  """A tiny protocol (cnn_fc after translate; plain last and full at one rate, 8 steps) with its plain rows
  run and kept open, so method tests build a method row's context from them: `(protocol, source, done)`,
  `done` the plain rows' records by row id. One per test session (per worker), shared by every method test."""
  from shiftbench.runs import plan, protocol_data
  from shiftbench.runs.protocol import Protocol
  from shiftbench.runs.settings import Settings

  root = tmp_path_factory.mktemp("methods_protocol")
  extra = ["model=cnn_fc", "pretrain.regimes=[translate]", "finetune.modes=[last,full]", "finetune.steps=8"]
  s = Settings.from_config(tiny_config(tiny_data_dir, root, extra))
  p = Protocol(s, *protocol_data.load_datasets(s), root)
  source, _ = p.pretrained("cnn_fc", "translate", 0)
  done = {}
  (pretrained,) = plan.groups(s)
  (at_rate,) = pretrained.rates
  with p.rows_of(pretrained), p.rows_at(at_rate):  # open for the tests, which read what the rows keep
    for rid in at_rate.rows:
      point = done[rid.plain_sibling("last")]["curve"][-1] if rid.finetune != "last" else None
      done[rid] = p.row(rid, source, None, point, done)
    yield p, source, done


@pytest.fixture(scope="session")
def tiny_results(tiny_data_dir, tmp_path_factory):
  """A directory holding a tiny real run (gap, scratch, head + full) and a copy of it as seed 1, so
  leaderboard, notebook and tracking tests read genuine `results.json` files and can aggregate seeds."""
  import json

  from shiftbench.runs.experiment import run_experiment

  root = tmp_path_factory.mktemp("tiny_results")
  cfg = tiny_config(
    tiny_data_dir, root, ["model=gap", "pretrain.regimes=[scratch]", "finetune.scratch_modes=[head,full]"]
  )
  run_experiment(cfg, root / "seed0")
  record = json.loads((root / "seed0" / "results.json").read_text())
  for r in record["rows"]:  # a tiny run may sit at chance (invariance undefined): give seed spread to test
    r["invariance"] = 0.2
  (root / "seed0" / "results.json").write_text(json.dumps(record))
  for r in record["rows"]:
    r["seed"], r["invariance"] = 1, 0.3
  (root / "seed1").mkdir()
  (root / "seed1" / "results.json").write_text(json.dumps(record))
  return root


def circular_shift_logits(model, x, shifts):
  """Logits (S, B, K) of `model` (in eval mode) on every input of `x` rolled by each (dy, dx) in `shifts`,
  in one compiled program, cached per model structure (so hypothesis examples do not recompile)."""
  import jax.numpy as jnp
  from flax import nnx

  model.eval()
  graphdef, state = nnx.split(model)
  return _shift_logits_fn(graphdef)(state, jnp.asarray(x), jnp.asarray(shifts, jnp.int32))


@functools.cache
def _shift_logits_fn(graphdef):
  # Imports are local so that JAX_PLATFORMS above is set before jax loads.
  import jax
  import jax.numpy as jnp
  from flax import nnx

  def run(state, x, shifts):
    xs = jax.vmap(lambda d: jnp.roll(x, (d[0], d[1]), (1, 2)))(shifts)
    return nnx.merge(graphdef, state)(xs.reshape(-1, *x.shape[1:])).reshape(shifts.shape[0], x.shape[0], -1)

  return jax.jit(run)


def logits_and_gradients(model, forwards):
  """For each `forward(model)` in `forwards`: its logits and the leaves of the gradient of a loss that weighs
  every logit, all in one compiled program, as training and evaluation run them (dispatching the same ops
  eagerly cost ~4x more time here, most of it compiling each op on its own). Numpy arrays a forward closes
  over stay numpy while tracing (a host location keeps its pad path)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  loss = lambda logits: (jnp.sin(logits) * jnp.arange(logits.shape[-1])).sum()

  @nnx.jit
  def run(model):
    return [(f(model), jax.tree.leaves(nnx.grad(lambda m, f=f: loss(f(m)))(model))) for f in forwards]

  return run(model)


def grid_logits_both_ways(model, objects, grid, canvas_size):
  """`model.on_grid` logits and the network's logits on every placed canvas, each (L, N, K), in one
  compiled program."""
  from flax import nnx

  from shiftbench.data import canvas

  x = canvas.place_grid(objects, grid, canvas_size)
  return nnx.jit(
    lambda model: (
      model.on_grid(objects, grid, canvas_size),
      model(x.reshape(-1, *x.shape[2:])).reshape(*x.shape[:2], -1),
    )
  )(model)


def objects_on_blank_canvas(n: int, canvas: int, size: int = 12, seed: int = 0):
  """`n` random-noise objects at the top-left of an otherwise black canvas (position matters for them)."""
  import numpy as np

  x = np.zeros((n, canvas, canvas, 1), np.float32)
  x[:, :size, :size] = np.random.default_rng(seed).uniform(size=(n, size, size, 1))
  return x


@functools.cache
def _adam():
  """One optimiser object for all tests, so the cached jitted training steps are reused across tests."""
  import optax

  return optax.adam(1e-2)


def train_a_few_steps(
  model, steps: int = 3, mode: str = "full", canvas_size: int = 32, seed: int = 0, dispatch: int = 1
):
  """A few real training steps through `shiftbench.training.loop` (random objects, translate regime)."""
  import numpy as np

  from shiftbench.data import canvas
  from shiftbench.data.device import DeviceObjects
  from shiftbench.training import loop as train

  rng = np.random.default_rng(seed)
  data = DeviceObjects.from_numpy(rng.integers(0, 256, (16, 8, 8, 1)), rng.integers(0, 3, 16), 3)
  return train.train(
    model,
    _adam(),
    data,
    canvas.CanvasSpec(canvas_size, 8),
    train.Placement("translate", (0, 0)),
    steps=steps,
    batch_size=8,
    seed=seed,
    mode=mode,
    dispatch=dispatch,
  )
