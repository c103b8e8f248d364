"""A model of your own for shiftbench: a small Flax NNX CNN with a global-average-pool head and one hidden
layer, defined outside the package. docs/api.md explains each part; tests/test_api.py runs this file.

It uses plain `nnx.Conv`; on CPU shiftbench then trains it one step per jitted call (docs/api.md, Speed).

From the folder holding this file:

  python -c "import shiftbench; print(shiftbench.evaluate('my_model.MyNet').rows)"
  PYTHONPATH=. shiftbench 'model=[]' +model.mynet._target_=my_model.MyNet +model.mynet._partial_=true
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from shiftbench.models import Network


class Backbone(nnx.Module):
  """conv -> ReLU -> 2x2 max pool, once per width. `features(x)` returns every block's output (the location
  maps' layer similarity reads them); calling it returns the last one, the head's input."""

  def __init__(self, in_channels: int, widths: Sequence[int], *, rngs: nnx.Rngs):
    sizes = [in_channels, *widths]
    self.convs = nnx.List([nnx.Conv(a, b, (3, 3), padding="SAME", rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])

  def features(self, x: jax.Array) -> list[jax.Array]:
    out = []
    for conv in self.convs:
      x = nnx.max_pool(jax.nn.relu(conv(x)), (2, 2), strides=(2, 2))
      out.append(x)
    return out

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.features(x)[-1]


class Head(nnx.Module):
  """Global average pool -> hidden dense layers (they transfer to the new classes, and train in `head`
  mode) -> `classifier` (new for each dataset; the only part `last` mode trains)."""

  def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, *, rngs: nnx.Rngs):
    sizes = [in_features, *hidden]
    self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
    self.classifier = nnx.Linear(sizes[-1], num_classes, rngs=rngs)

  def hidden_features(self, x: jax.Array) -> list[jax.Array]:
    out, x = [], x.mean(axis=(1, 2))
    for layer in self.hidden:
      x = jax.nn.relu(layer(x))
      out.append(x)
    return out

  def pre_logits(self, x: jax.Array) -> jax.Array:
    hidden = self.hidden_features(x)
    return hidden[-1] if hidden else x.mean(axis=(1, 2))

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.classifier(self.pre_logits(x))


class MyNet(Network):
  """What the protocol builds: `MyNet(num_classes=..., canvas_size=..., in_channels=..., rngs=...)`, plus
  this model's own arguments (`widths`, `hidden`), which a config sets (`model.mynet.widths=[8,16]`).
  `Network` adds the rest of the protocol: `__call__` (backbone, then head), `on_canvas`, `on_grid` and
  `input_adapter` (None).

  Three blocks by default (cnn_fc's widths): after three 2x2 pools a unit sees 22 px, the whole 12-px glyph
  of the default run; with two (`widths=[8,16]`, 10 px) a global-pool head learns the glyphs too slowly for
  its budget (in-location accuracy 0.41-0.86 instead of 0.67-0.97, docs/api.md)."""

  def __init__(
    self,
    *,
    num_classes: int,
    canvas_size: int,
    in_channels: int = 1,
    widths: Sequence[int] = (8, 16, 32),
    hidden: Sequence[int] = (32,),
    rngs: nnx.Rngs,
  ):
    del canvas_size  # a global-pool head does not depend on it (a flatten head would)
    self.backbone = Backbone(in_channels, widths, rngs=rngs)
    self.head = Head(widths[-1], hidden, num_classes, rngs=rngs)
