"""DenseNet-121 (Huang et al. 2017) in torchvision's layout: `densenet121`.

torchvision's documented DenseNet-121 (growth rate 32, blocks (6, 12, 24, 16), 64 initial features,
bottleneck size 4, no dropout): `features.conv0` 7x7 stride 2 padding 3 (no bias), `norm0`, ReLU, `pool0`
3x3 max stride 2 padding 1; `denseblock<i>.denselayer<j>`: `norm1`, ReLU, `conv1` 1x1 to 4 x growth,
`norm2`, ReLU, `conv2` 3x3 padding 1 to growth, its output concatenated to its input; between blocks
`transition<i>`: `norm`, ReLU, `conv` 1x1 halving the channels, 2x2 average pool stride 2; `norm5`, ReLU,
global average pool, `classifier` (the only part that does not transfer).

Biscione & Bowers found this the one tested network that was invariant from its architecture alone.
`width` multiplies the initial features and the growth rate, so the same topology runs small on CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from shiftbench.models import layers, tv_layers
from shiftbench.models.input_adapter import InputAdapter

BLOCKS_121 = (6, 12, 24, 16)
BN_SIZE = 4


class DenseLayer(nnx.Module):
  def __init__(self, cin: int, growth: int, rngs: nnx.Rngs):
    self.norm1 = tv_layers.batch_norm(cin, rngs)
    self.conv1 = tv_layers.conv(cin, BN_SIZE * growth, 1, rngs=rngs)
    self.norm2 = tv_layers.batch_norm(BN_SIZE * growth, rngs)
    self.conv2 = tv_layers.conv(BN_SIZE * growth, growth, 3, padding=1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv1(jax.nn.relu(self.norm1(x)))
    return self.conv2(jax.nn.relu(self.norm2(h)))


class Transition(nnx.Module):
  def __init__(self, cin: int, cout: int, rngs: nnx.Rngs):
    self.norm = tv_layers.batch_norm(cin, rngs)
    self.conv = tv_layers.conv(cin, cout, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return layers.avg_pool_2x2(self.conv(jax.nn.relu(self.norm(x))))


class DenseNetFeatures(nnx.Module):
  """Input adapter, stem, dense blocks with their transitions, and the final norm."""

  def __init__(self, blocks: tuple[int, ...], width: float, adapter: InputAdapter, rngs: nnx.Rngs):
    self.adapter = adapter
    growth, c = tv_layers.scaled(32, width), tv_layers.scaled(64, width)
    self.conv0 = tv_layers.conv(adapter.out_channels, c, 7, stride=2, padding=3, rngs=rngs)
    self.norm0 = tv_layers.batch_norm(c, rngs)
    dense, transitions = [], []
    for i, n in enumerate(blocks):
      dense.append(nnx.List([DenseLayer(c + j * growth, growth, rngs) for j in range(n)]))
      c += n * growth
      if i < len(blocks) - 1:
        transitions.append(Transition(c, c // 2, rngs))
        c //= 2
    self.dense, self.transitions = nnx.List(dense), nnx.List(transitions)
    self.norm5 = tv_layers.batch_norm(c, rngs)
    self.channels = c

  def features(self, x: jax.Array) -> list[jax.Array]:
    """The stem's output (after pool0), every transition's and the last block's after norm5 + ReLU."""
    x = tv_layers.max_pool_3x3_s2(jax.nn.relu(self.norm0(self.conv0(self.adapter(x)))))
    out = [x]
    for i, block in enumerate(self.dense):
      feats = [x]
      for layer in block:
        feats.append(layer(jnp.concatenate(feats, axis=-1)))
      x = jnp.concatenate(feats, axis=-1)
      x = self.transitions[i](x) if i < len(self.transitions) else jax.nn.relu(self.norm5(x))
      out.append(x)
    return out

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.features(x)[-1]

  def torchvision_layers(self) -> tv_layers.TorchLayers:
    yield "features.conv0", self.conv0
    yield "features.norm0", self.norm0
    for i, block in enumerate(self.dense):
      for j, layer in enumerate(block):
        prefix = f"features.denseblock{i + 1}.denselayer{j + 1}"
        for name in ("norm1", "conv1", "norm2", "conv2"):
          yield f"{prefix}.{name}", getattr(layer, name)
      if i < len(self.transitions):
        yield f"features.transition{i + 1}.norm", self.transitions[i].norm
        yield f"features.transition{i + 1}.conv", self.transitions[i].conv
    yield "features.norm5", self.norm5


class DenseNet(tv_layers.TorchvisionNet):
  """torchvision's DenseNet-121.

  Args:
    num_classes, canvas_size, in_channels: as for every model factory (any canvas of at least 32 px).
    width: multiplier of the initial features and growth rate (1 = torchvision's network).
    blocks: dense layers per block ((6, 12, 24, 16) is DenseNet-121).
    input_adapter: `imagenet`, `repeat` or `none` (`input_adapter.py`).
  """

  def __init__(
    self,
    *,
    num_classes: int,
    canvas_size: int = 224,
    in_channels: int = 1,
    width: float = 1.0,
    blocks: tuple[int, ...] = BLOCKS_121,
    input_adapter: str = "imagenet",
    rngs: nnx.Rngs,
  ):
    if canvas_size < 32:
      raise ValueError(f"canvas_size={canvas_size} is too small for DenseNet's five halvings (>= 32)")
    blocks = tuple(int(b) for b in blocks)
    self.arch = "densenet121" if blocks == BLOCKS_121 else "densenet"
    self.backbone = DenseNetFeatures(blocks, width, InputAdapter(input_adapter, in_channels), rngs)
    self.head = tv_layers.Head(self.backbone.channels, 1, (), num_classes, rngs=rngs)
    self.head_names = ("classifier",)
