"""VGG (Simonyan & Zisserman 2015) in torchvision's layout: `vgg11`, `vgg16`, `vgg16_bn`.

torchvision's documented VGG: `features` is a Sequential over the configuration (A = VGG-11,
D = VGG-16), each number a 3x3 conv with padding 1 (+ BatchNorm for `_bn`) + ReLU, each `M` a 2x2 max pool
with stride 2; then `AdaptiveAvgPool2d((7, 7))`, flatten, and `classifier` = Linear(512*7*7, 4096), ReLU,
Dropout, Linear(4096, 4096), ReLU, Dropout, Linear(4096, classes). Here the two hidden Linear layers
(fc6, fc7) are `head.hidden` and transfer; the last (fc8) is `head.classifier`.
PyTorch names: `features.<i>` for the i-th entry of that Sequential (conv, BN, ReLU and pool entries all
count), `classifier.0/3/6` for fc6/fc7/fc8.

`width` multiplies every channel count (convs and FC layers), so the same topology runs small on CPU; the
adaptive pool lets any canvas of at least 32 px (five halvings) work. On blank canvases (`on_canvas`,
`on_grid`) the first stages run near the object (`vgg_object_first.py`, exact).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shiftbench.data import canvas
from shiftbench.models import layers, tv_layers, vgg_object_first
from shiftbench.models.input_adapter import InputAdapter

CONFIGS: dict[int, tuple] = {
  11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
  16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


class VGGFeatures(nnx.Module):
  """The input adapter and the conv stages; a stage ends at each max pool."""

  def __init__(self, depth: int, batch_norm: bool, width: float, adapter: InputAdapter, rngs: nnx.Rngs):
    self.adapter = adapter
    stages, stage, names, index, cin = [], [], [], 0, adapter.out_channels
    for v in CONFIGS[depth]:
      if v == "M":
        stages.append(nnx.List(stage))
        stage, index = [], index + 1
        continue
      cout = tv_layers.scaled(v, width)
      conv = tv_layers.conv(cin, cout, 3, padding=1, bias=True, rngs=rngs)
      bn = tv_layers.batch_norm(cout, rngs) if batch_norm else None
      stage.append(nnx.List([conv] + ([bn] if bn is not None else [])))
      names.append(index)
      index += 3 if batch_norm else 2  # conv (+ BN) + ReLU
      cin = cout
    self.stages = nnx.List(stages)
    self.indices = tuple(names)
    self.channels = cin

  def stage(self, i: int, x: jax.Array) -> jax.Array:
    stage = list(self.stages[i])
    for j, conv_bn in enumerate(stage):
      x = conv_bn[0](x)
      if len(conv_bn) > 1:
        x = conv_bn[1](x)
      if j < len(stage) - 1:
        x = jax.nn.relu(x)
    return jax.nn.relu(layers.max_pool_2x2(x))  # ReLU commutes with max: applied to 4x fewer values

  def features(self, x: jax.Array) -> list[jax.Array]:
    """Every stage's output (after its max pool)."""
    out, x = [], self.adapter(x)
    for i in range(len(self.stages)):
      x = self.stage(i, x)
      out.append(x)
    return out

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.features(x)[-1]

  def torchvision_layers(self) -> tv_layers.TorchLayers:
    convs = [conv_bn for stage in self.stages for conv_bn in stage]
    for index, conv_bn in zip(self.indices, convs):
      yield f"features.{index}", conv_bn[0]
      if len(conv_bn) > 1:
        yield f"features.{index + 1}", conv_bn[1]


class VGG(tv_layers.TorchvisionNet):
  """torchvision's VGG-11/16 (with `batch_norm`, VGG-16-BN).

  Args:
    num_classes, canvas_size, in_channels: as for every model factory (`canvas_size` is unused: the
      adaptive pool takes any size of at least 32).
    depth: 11 or 16.
    batch_norm: BatchNorm after every conv (`vgg16_bn`).
    width: channel multiplier for convs and FC layers (1 = torchvision's network).
    dropout: the classifier's dropout rate (torchvision: 0.5); off in eval mode.
    input_adapter: `imagenet`, `repeat` or `none` (`input_adapter.py`).
    object_first: run the first stages near the object in `on_canvas` / `on_grid` (`vgg_object_first.py`:
      the same logits, less work); False always convolves the whole canvas.
  """

  def __init__(
    self,
    *,
    num_classes: int,
    canvas_size: int = 224,
    in_channels: int = 1,
    depth: int = 16,
    batch_norm: bool = False,
    width: float = 1.0,
    dropout: float = 0.5,
    input_adapter: str = "imagenet",
    object_first: bool = True,
    rngs: nnx.Rngs,
  ):
    if depth not in CONFIGS:
      raise ValueError(f"VGG depth must be one of {sorted(CONFIGS)}, got {depth}")
    if canvas_size < 32:
      raise ValueError(f"canvas_size={canvas_size} is too small for VGG's five 2x2 max pools (>= 32)")
    self.arch = f"vgg{depth}" + ("_bn" if batch_norm else "")
    self.backbone = VGGFeatures(depth, batch_norm, width, InputAdapter(input_adapter, in_channels), rngs)
    fc = tv_layers.scaled(4096, width)
    self.head = tv_layers.Head(
      self.backbone.channels,
      7,
      (fc, fc),
      num_classes,
      dropout=dropout,
      linear_init=tv_layers.host_normal(lambda s: 0.01),
      rngs=rngs,
    )
    self.head_names = ("classifier.0", "classifier.3", "classifier.6")
    self.object_first = object_first

  def _near_stages(self, objects: jax.Array, canvas_size: int) -> int:
    """How many stages `on_canvas` runs near the objects (0: the canvas path)."""
    if not self.object_first or objects.shape[1] != objects.shape[2] or vgg_object_first.supported(self.backbone):
      return 0
    return vgg_object_first.near_stages(self.backbone, objects.shape[1], canvas_size)

  def on_canvas(self, objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
    """`self(canvas.place(objects, locations, canvas_size))`, with the first stages run near the objects."""
    n = self._near_stages(objects, canvas_size)
    if n == 0:
      return self(canvas.place(objects, locations, canvas_size))
    x = vgg_object_first.first_stages(self.backbone, objects, locations, canvas_size, n)
    for i in range(n, len(self.backbone.stages)):
      x = self.backbone.stage(i, x)
    return self.head(x)

  def on_grid(self, objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
    """Logits of every object at every location, (L, B, classes), through `on_canvas`."""
    if self._near_stages(objects, canvas_size) == 0:
      return canvas.apply_on_grid(self, objects, locations, canvas_size)
    n_loc, n_obj = locations.shape[0], objects.shape[0]
    xp = np if isinstance(locations, np.ndarray) else jnp
    locs = xp.repeat(locations, n_obj, axis=0)  # location-major, as canvas.apply_on_grid
    logits = self.on_canvas(jnp.tile(objects, (n_loc, 1, 1, 1)), locs, canvas_size)
    return logits.reshape(n_loc, n_obj, -1)
