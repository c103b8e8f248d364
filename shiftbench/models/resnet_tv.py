"""ResNet (He et al. 2016) in torchvision's layout: `resnet18_tv` (BasicBlocks) and `resnet50` (Bottlenecks).

torchvision's documented ResNet: `conv1` 7x7 stride 2 padding 3 (no bias), `bn1`, ReLU, `maxpool` 3x3
stride 2 padding 1, `layer1`..`layer4` (64, 128, 256, 512 planes; layers 2-4 start with stride 2), global
average pool, `fc`. BasicBlock: `conv1` 3x3 (stride), `bn1`, ReLU, `conv2` 3x3, `bn2`, + shortcut, ReLU.
Bottleneck (the stride on the 3x3 conv, "ResNet v1.5"): `conv1` 1x1, `bn1`, `conv2` 3x3 (stride), `bn2`,
`conv3` 1x1 to 4x planes, `bn3`, + shortcut, ReLU. The shortcut is `downsample.0` (1x1 conv with the
block's stride) + `downsample.1` (BN) when the shape changes, else the identity.
The classifier is `fc` (`head.classifier`); there are no hidden FC layers, so everything else transfers.

`resnet18_tv` is named apart from the CIFAR-sized `ResNet` (`resnet.py`, with swappable parts).
"""

from __future__ import annotations

import jax
from flax import nnx

from shiftbench.models import tv_layers
from shiftbench.models.input_adapter import InputAdapter

LAYOUTS: dict[int, tuple[str, tuple[int, ...]]] = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}
EXPANSION = {"basic": 1, "bottleneck": 4}


class Block(nnx.Module):
  """A BasicBlock or a Bottleneck, with the torchvision names of its layers as attribute names."""

  def __init__(self, kind: str, cin: int, planes: int, stride: int, rngs: nnx.Rngs):
    self.kind = kind
    cout = planes * EXPANSION[kind]
    if kind == "basic":
      self.conv1 = tv_layers.conv(cin, planes, 3, stride=stride, padding=1, rngs=rngs)
      self.conv2 = tv_layers.conv(planes, planes, 3, padding=1, rngs=rngs)
    else:
      self.conv1 = tv_layers.conv(cin, planes, 1, rngs=rngs)
      self.conv2 = tv_layers.conv(planes, planes, 3, stride=stride, padding=1, rngs=rngs)
      self.conv3 = tv_layers.conv(planes, cout, 1, rngs=rngs)
      self.bn3 = tv_layers.batch_norm(cout, rngs)
    self.bn1 = tv_layers.batch_norm(planes, rngs)
    self.bn2 = tv_layers.batch_norm(planes, rngs)
    self.project = stride != 1 or cin != cout
    if self.project:
      self.down_conv = tv_layers.conv(cin, cout, 1, stride=stride, rngs=rngs)
      self.down_bn = tv_layers.batch_norm(cout, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = jax.nn.relu(self.bn1(self.conv1(x)))
    h = self.bn2(self.conv2(h))
    if self.kind == "bottleneck":
      h = self.bn3(self.conv3(jax.nn.relu(h)))
    short = self.down_bn(self.down_conv(x)) if self.project else x
    return jax.nn.relu(h + short)

  def torchvision_layers(self, prefix: str) -> tv_layers.TorchLayers:
    names = ("conv1", "bn1", "conv2", "bn2") + (("conv3", "bn3") if self.kind == "bottleneck" else ())
    for name in names:
      yield f"{prefix}.{name}", getattr(self, name)
    if self.project:
      yield f"{prefix}.downsample.0", self.down_conv
      yield f"{prefix}.downsample.1", self.down_bn


class ResNetFeatures(nnx.Module):
  """Input adapter, stem and the four layers of blocks."""

  def __init__(self, depth: int, width: float, adapter: InputAdapter, rngs: nnx.Rngs):
    kind, counts = LAYOUTS[depth]
    self.adapter = adapter
    stem = tv_layers.scaled(64, width)
    self.conv1 = tv_layers.conv(adapter.out_channels, stem, 7, stride=2, padding=3, rngs=rngs)
    self.bn1 = tv_layers.batch_norm(stem, rngs)
    blocks, names, cin = [], [], stem
    for i, n in enumerate(counts):
      planes = tv_layers.scaled(64 * 2**i, width)
      for j in range(n):
        blocks.append(Block(kind, cin, planes, 2 if i > 0 and j == 0 else 1, rngs))
        names.append(f"layer{i + 1}.{j}")
        cin = planes * EXPANSION[kind]
    self.blocks = nnx.List(blocks)
    self.names = tuple(names)
    self.channels = cin

  def features(self, x: jax.Array) -> list[jax.Array]:
    """The stem's output (after the max pool) and every block's."""
    x = jax.nn.relu(self.bn1(self.conv1(self.adapter(x))))
    out = [tv_layers.max_pool_3x3_s2(x)]
    for block in self.blocks:
      out.append(block(out[-1]))
    return out

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.features(x)[-1]

  def torchvision_layers(self) -> tv_layers.TorchLayers:
    yield "conv1", self.conv1
    yield "bn1", self.bn1
    for name, block in zip(self.names, self.blocks):
      yield from block.torchvision_layers(name)


class TorchvisionResNet(tv_layers.TorchvisionNet):
  """torchvision's ResNet-18 (`depth=18`) or ResNet-50 (`depth=50`).

  Args:
    num_classes, canvas_size, in_channels: as for every model factory (any canvas of at least 32 px).
    depth: 18 or 50.
    width: channel multiplier (1 = torchvision's network).
    input_adapter: `imagenet`, `repeat` or `none` (`input_adapter.py`).
  """

  def __init__(
    self,
    *,
    num_classes: int,
    canvas_size: int = 224,
    in_channels: int = 1,
    depth: int = 50,
    width: float = 1.0,
    input_adapter: str = "imagenet",
    rngs: nnx.Rngs,
  ):
    if depth not in LAYOUTS:
      raise ValueError(f"torchvision ResNet depth must be one of {sorted(LAYOUTS)}, got {depth}")
    if canvas_size < 32:
      raise ValueError(f"canvas_size={canvas_size} is too small for ResNet's five halvings (>= 32)")
    self.arch = "resnet18_tv" if depth == 18 else f"resnet{depth}"
    self.backbone = ResNetFeatures(depth, width, InputAdapter(input_adapter, in_channels), rngs)
    self.head = tv_layers.Head(self.backbone.channels, 1, (), num_classes, rngs=rngs)
    self.head_names = ("fc",)
