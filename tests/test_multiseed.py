"""Seeds trained side by side with vmap equal seeds trained one by one."""

import chex
import jax
import numpy as np
import optax
from flax import nnx

from shiftbench import canvas, multiseed, train
from shiftbench.models import ShiftNet

SPEC = canvas.CanvasSpec(16, 6)


def _data() -> train.DeviceObjects:
  rng = np.random.default_rng(0)
  return train.DeviceObjects.from_numpy(rng.integers(0, 256, (40, 6, 6, 1)), rng.integers(0, 3, 40), 3)


def _model(seed: int) -> ShiftNet:
  return ShiftNet(num_classes=3, canvas_size=16, widths=(4, 8), head="gap", rngs=nnx.Rngs(seed))


def test_vmapped_seeds_equal_separate_runs():
  data, tx, seeds = _data(), optax.adam(1e-2), [0, 1, 2]
  placement = train.Placement("translate", (0, 0))
  kwargs = dict(steps=3, batch_size=8)
  separate = [_model(s) for s in seeds]
  for m, s in zip(separate, seeds):
    train.train(m, tx, data, SPEC, placement, seed=s, dispatch=1, **kwargs)
  together = [_model(s) for s in seeds]
  histories = multiseed.train_seeds(together, tx, data, SPEC, placement, seeds=seeds, **kwargs)
  assert len(histories) == 3 and histories[0][-1]["step"] == 3
  for a, b in zip(separate, together):
    chex.assert_trees_all_close(nnx.state(a, nnx.Param), nnx.state(b, nnx.Param), rtol=1e-4, atol=1e-5)
  # and the seeds really differ from each other
  assert not np.allclose(jax.tree.leaves(nnx.state(together[0], nnx.Param))[0],
                         jax.tree.leaves(nnx.state(together[1], nnx.Param))[0])


def test_head_mode_keeps_backbones_frozen():
  data, seeds = _data(), [3, 4]
  models = [_model(s) for s in seeds]
  before = [jax.tree.map(np.array, nnx.state(m.backbone)) for m in models]
  multiseed.train_seeds(models, optax.adam(1e-2), data, SPEC, train.Placement("fixed", (5, 5)), steps=2,
                        batch_size=4, seeds=seeds, mode="head")
  for m, b in zip(models, before):
    chex.assert_trees_all_equal(jax.tree.map(np.array, nnx.state(m.backbone)), b)
