"""Consistency, worst case, flip rate and similarity: known answers from hand-built models, and equality
with slow NumPy loops over the definitions of docs/metrics.md."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_metrics import GlobalMax, PixelReader, _constant_objects

from shiftbench import evaluators, models
from shiftbench.data import canvas
from shiftbench.data.device import DeviceObjects
from shiftbench.evaluators import consistency, metrics, similarity
from shiftbench.evaluators.predictor import Forward, Predictor, layer_features
from shiftbench.models import ShiftNet
from shiftbench.models.cnn import Head
from shiftbench.runs.settings import build_evaluators

K, SPEC, P_FT = 4, canvas.CanvasSpec(14, 4), (5, 5)


def _ctx(grid=None, **kw) -> evaluators.EvalContext:
  grid = canvas.location_grid(SPEC, 2, include=P_FT) if grid is None else grid
  return evaluators.EvalContext(SPEC, grid, P_FT, batch_size=256, **kw)


def _run(evaluator, model, objects, ctx=None) -> dict:
  return dict(evaluator.run(Predictor(model, SPEC.canvas_size), objects, ctx or _ctx()))


def _objects(relabel: int = 0) -> DeviceObjects:
  """Constant objects; the first `relabel` get a wrong label, so clean accuracy is known and < 1."""
  images, labels = _constant_objects(K, 5, 4)
  labels = labels.copy()
  labels[:relabel] = (labels[:relabel] + 1) % K
  return DeviceObjects(images, jnp.asarray(labels, jnp.int32), K)


def _canvas_np(obj: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
  out = np.zeros((size, size, obj.shape[-1]), np.float32)
  out[y : y + obj.shape[0], x : x + obj.shape[1]] = obj.astype(np.float32) / 255
  return out


def _predict_np(model, canvases: list[np.ndarray]) -> np.ndarray:
  return np.asarray(jnp.argmax(model(jnp.asarray(np.stack(canvases))), -1))


def _tiny_net(head: str = "fc", seed: int = 0) -> ShiftNet:
  return ShiftNet(num_classes=K, canvas_size=SPEC.canvas_size, widths=(3, 4), head=head, rngs=nnx.Rngs(seed))


def _random_objects(n: int = 12, seed: int = 0) -> DeviceObjects:
  rng = np.random.default_rng(seed)
  return DeviceObjects(
    jnp.asarray(rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)), jnp.asarray(np.arange(n) % K, jnp.int32), K
  )


# -- known answers ----------------------------------------------------------------------------------
def test_an_exactly_invariant_model_is_consistent_never_flips_and_its_worst_case_is_its_clean_accuracy():
  objs, model = _objects(relabel=5), GlobalMax(K)  # 5 of 20 objects mislabelled: clean accuracy 0.75
  for shift in consistency.SHIFTS:
    assert _run(evaluators.ShiftConsistency(d=3, shift=shift), model, objs)[""] == 1.0
  assert _run(evaluators.WorstCase(), model, objs)["acc"] == pytest.approx(0.75)
  assert _run(evaluators.WorstCase(k=5), model, objs)["acc"] == pytest.approx(0.75)
  flips = _run(evaluators.FlipRate(), model, objs)
  assert flips == {"": 0.0, "horizontal": 0.0, "vertical": 0.0}


def test_a_fixed_patch_reader_is_correct_everywhere_only_for_the_background_class():
  objs, model = _objects(), PixelReader(*P_FT, K)
  # Off-location it always answers class 0, so exactly the class-0 objects are right at every location.
  assert _run(evaluators.WorstCase(), model, objs)["acc"] == pytest.approx(1 / K)
  # Along a full sweep the pixel is covered for 4 positions in the middle: 2 flips per non-0 object.
  flips = _run(evaluators.FlipRate(), model, objs)
  assert flips["horizontal"] == pytest.approx(2 * (K - 1) / K / SPEC.max_offset)
  # A shift of at most 1 px keeps the pixel covered or uncovered in most pairs, not all.
  assert 0.0 < _run(evaluators.ShiftConsistency(d=1, num_objects=None), model, objs)[""] < 1.0


def test_identical_inputs_have_similarity_one_and_an_invariant_representation_scores_one_everywhere():
  f = jax.random.normal(jax.random.key(0), (6, 10))
  labels = jnp.arange(6) % 3
  assert float(
    similarity.normalised_similarity(similarity.cos_same(f, f), similarity.cos_diff(f, labels, 3))
  ) == pytest.approx(1.0)

  class MaxBackbone(nnx.Module):  # a global max per channel: the same features wherever the object is
    def __call__(self, x):
      return self.features(x)[-1]

    def features(self, x):
      m = x.max(axis=(1, 2))  # (B, 1); features not collinear across classes, so cos_diff < 1
      return [jnp.concatenate([m, m**2, 1.0 - m], axis=-1)[:, None, None, :]]  # a 1x1 feature map

  class Invariant(models.Network):
    def __init__(self):
      self.backbone, self.head = MaxBackbone(), Head("gap", (1, 1, 3), K, rngs=nnx.Rngs(0))

  assert isinstance(Invariant(), models.ShiftModel)

  objs = _objects()
  sims = similarity.similarity_map(
    Predictor(Invariant(), SPEC.canvas_size), objs.images, objs.labels, _ctx().grid, P_FT
  )
  np.testing.assert_allclose(sims, 1.0, atol=1e-5)


# -- equality with slow loops -----------------------------------------------------------------------
@pytest.mark.parametrize("shift", consistency.SHIFTS)
def test_consistency_equals_a_loop_over_the_same_pairs(shift):
  model, objs, d = _tiny_net(), _random_objects(), 3
  base, offset = consistency.sample_shift_pairs(jax.random.key(1), len(objs), SPEC, d, shift)
  base, offset = np.asarray(base), np.asarray(offset)
  assert (np.abs(offset) <= d).all() and (base >= 0).all() and (base <= SPEC.max_offset).all()
  pairs = []
  for obj, (y, x), (dy, dx) in zip(np.asarray(objs.images), base, offset):
    a = _canvas_np(obj, y, x, SPEC.canvas_size)
    if shift == "canvas":
      assert 0 <= y + dy <= SPEC.max_offset and 0 <= x + dx <= SPEC.max_offset  # stays inside
      b = _canvas_np(obj, y + dy, x + dx, SPEC.canvas_size)
    else:
      b = np.roll(a, (dy, dx), axis=(0, 1))
    pairs += [a, b]
  preds = _predict_np(model, pairs)  # one batched call: the loop above is the definition
  same = [preds[2 * i] == preds[2 * i + 1] for i in range(len(objs))]
  got = consistency.shift_consistency(
    Predictor(model, SPEC.canvas_size), objs.images, jax.random.key(1), SPEC, d, shift, batch_size=10
  )
  assert got == pytest.approx(np.mean(same))


def test_offsets_are_drawn_per_object_and_cover_every_direction():
  base, offset = consistency.sample_shift_pairs(jax.random.key(0), 2000, SPEC, 2, "canvas")
  offsets = {tuple(o) for o in np.asarray(offset)}
  assert offsets == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}  # diagonals included


def test_worst_case_and_worst_of_k_equal_loops():
  rng = np.random.default_rng(0)
  preds, labels = rng.integers(0, 3, (9, 40)), rng.integers(0, 3, 40)
  ref = np.mean([all(preds[p, i] == labels[i] for p in range(9)) for i in range(40)])
  assert float(metrics.worst_case_accuracy(preds, labels)) == pytest.approx(ref)
  key = jax.random.key(3)
  picks = np.asarray(jax.random.randint(key, (4, 40), 0, 9))  # the draws the metric makes
  ref = np.mean([all(preds[picks[j, i], i] == labels[i] for j in range(4)) for i in range(40)])
  assert float(metrics.worst_of_k_accuracy(key, preds, labels, 4)) == pytest.approx(ref)


def test_flip_rate_equals_a_loop_over_sweeps():
  model, objs = _tiny_net("gap"), _random_objects()
  paths = evaluators.sweep_paths(SPEC, P_FT, None)
  flips = []
  for path in paths.values():
    p = _predict_np(model, [_canvas_np(o, y, x, SPEC.canvas_size) for o in np.asarray(objs.images) for y, x in path])
    p = p.reshape(len(objs), len(path))
    flips += [p[i, s] != p[i, s + 1] for i in range(len(objs)) for s in range(len(path) - 1)]
  assert _run(evaluators.FlipRate(), model, objs)[""] == pytest.approx(np.mean(flips))
  short = evaluators.sweep_paths(SPEC, (0, 9), 4)
  assert short["horizontal"][:, 1].tolist() == [6, 7, 8, 9, 10] and (short["vertical"][:, 0] == [0, 1, 2, 3, 4]).all()


def test_similarity_equals_a_loop_over_layers_locations_and_pairs():
  model, objs = _tiny_net("fc"), _random_objects(8)
  grid = canvas.location_grid(SPEC, 5, include=P_FT)
  got = similarity.similarity_map(
    Predictor(model, SPEC.canvas_size), objs.images, objs.labels, grid, P_FT, batch_size=20
  )
  labels = np.asarray(objs.labels)
  ref_x = np.stack([_canvas_np(o, *P_FT, SPEC.canvas_size) for o in np.asarray(objs.images)])
  ref_f = [np.asarray(f) for f in layer_features(model, jnp.asarray(ref_x))]
  assert len(ref_f) == 4  # 2 blocks, the flattened pre-logit input, the logits

  def cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))

  for pi, (y, x) in enumerate(grid):
    xs = np.stack([_canvas_np(o, y, x, SPEC.canvas_size) for o in np.asarray(objs.images)])
    for li, f in enumerate(layer_features(model, jnp.asarray(xs))):
      f = np.asarray(f)
      same = np.mean([cos(ref_f[li][i], f[i]) for i in range(len(f))])
      diff = np.mean([cos(f[i], f[j]) for i in range(len(f)) for j in range(len(f)) if labels[i] != labels[j]])
      assert got[li, pi] == pytest.approx((same - diff) / (1 - diff), rel=1e-4, abs=1e-4)
  assert np.allclose(got[:, list(map(tuple, grid)).index(P_FT)], 1.0, atol=1e-5)  # at p_ft itself


def _count_traces(monkeypatch) -> list:
  """A list that grows by one whenever a `Predictor` program is traced (each trace builds one `Forward`)."""
  traced, init = [], Forward.__init__
  monkeypatch.setattr(Forward, "__init__", lambda self, *a: traced.append(a) or init(self, *a))
  return traced


def test_every_default_metric_runs_on_the_one_predictor_it_is_handed_and_nothing_retraces(monkeypatch):
  from hydra import compose, initialize_config_dir
  from test_config import CONF

  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    cfg = compose("config")
  evals = build_evaluators(cfg.eval.metrics)
  received = []
  for e in evals.values():
    e.run = lambda p, o, c, run=e.run: received.append(p) or run(p, o, c)
  traced = _count_traces(monkeypatch)
  # Widths no other test compiles, so every program of every evaluator is traced here, and only here.
  net = lambda seed: ShiftNet(
    num_classes=K, canvas_size=SPEC.canvas_size, widths=(3, 5), head="gap", rngs=nnx.Rngs(seed)
  )
  objs = _random_objects()
  first = Predictor(net(0), SPEC.canvas_size)
  out = evaluators.run_all(evals, first, objs, _ctx())
  assert {
    "similarity",
    "similarity_layers",
    "consistency",
    "consistency_circular",
    "consistency_local",
    "worst_case_acc",
    "worst_of_k_acc",
    "flip_rate",
    "flip_rate_horizontal",
    "flip_rate_vertical",
  } == set(out)
  assert set(out["similarity_layers"]) == {"block0", "block1", "pre_logits", "logits"}
  assert received == [first] * len(evals) and traced
  compiled = len(traced)
  # Other weights of the same model (as after fine-tuning) at another fine-tune location (flip-rate sweeps
  # and similarity references elsewhere): their own Predictor, and the programs already compiled.
  second = Predictor(net(1), SPEC.canvas_size)
  evaluators.run_all(evals, second, objs, evaluators.EvalContext(SPEC, _ctx().grid, (10, 3), batch_size=256))
  before = evaluators.run_all(evals, second, objs, _ctx(), before=True)
  assert set(before) == {"similarity_before", "similarity_before_layers"}
  assert received[len(evals) :] == [second] * (len(evals) + 1) and len(traced) == compiled


def test_local_consistency_pairs_start_at_the_fine_tune_location_and_stay_on_the_canvas():
  spec = canvas.CanvasSpec(16, 6)  # valid locations 0..10 per axis
  for where in ((5, 5), (0, 10)):  # the centre, and a corner where offsets must stop at the edge
    base, offset = consistency.sample_shift_pairs(jax.random.key(0), 500, spec, 4, "canvas", around=where)
    base, shifted = np.asarray(base), np.asarray(base + offset)
    assert (base == where).all()
    assert (shifted >= 0).all() and (shifted <= spec.max_offset).all()
    assert (np.abs(shifted - base) <= 4).all() and (shifted != base).any(axis=1).mean() > 0.5
  with pytest.raises(Exception, match="around must be one of canvas, finetune"):
    evaluators.ShiftConsistency(around="everywhere")
