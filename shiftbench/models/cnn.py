"""One convolutional network with swappable downsampling, padding and head (docs/models.md).

The presets in `conf/model/` are settings of this one class:
  cnn_fc   = max-pool backbone + flatten -> hidden FC layers -> classifier (the classic CNN+FC);
  fcn      = strided-conv backbone + 1x1-conv class maps averaged (no dense layer);
  gap      = max-pool backbone + global average pool + dense;
  blurpool = MaxBlurPool backbone (Zhang 2019) + global average pool + dense;
  aps      = circular padding + max (stride 1) then adaptive polyphase sampling (Chaman & Dokmanic 2021)
             + global average pool + dense: exactly invariant to circular shifts of the canvas.

Downsampling, each replacing a stride-2 operation by its published anti-aliased / adaptive version:
  max       conv -> 2x2 max pool stride 2 -> ReLU
  blur      MaxBlurPool: conv -> ReLU -> 2x2 max stride 1 -> blur stride 2
  stride    conv stride 2 -> ReLU
  conv_blur ConvBlurPool: conv stride 1 -> ReLU -> blur stride 2
  avg       conv -> ReLU -> 2x2 average pool stride 2
  avg_blur  AvgPool -> BlurPool (blur stride 2); in this conv -> pool backbone it is the same network as
            conv_blur, both exist so configs can name the published replacement they mean
  aps       APS in the max-pool position, as in the APS paper's max-pool networks: conv -> ReLU -> 2x2 max
            stride 1 (circular when the conv padding is circular) -> blur stride 1 if blur_size > 1 (the
            paper's "APS + LPF") -> keep the polyphase component of largest norm
  none      conv -> ReLU
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from shiftbench.data import canvas
from shiftbench.models import aps, layers, object_first
from shiftbench.models.shift_model import Network

DOWNSAMPLES: tuple[str, ...] = ("max", "blur", "stride", "conv_blur", "avg", "avg_blur", "aps", "none")
HEADS: tuple[str, ...] = ("fc", "gap", "conv")


class Block(nnx.Module):
  """conv -> downsample -> ReLU. ReLU commutes with max, so applying it after the pool is exact and
  touches 4x fewer values; for blur/stride the order is Zhang's conv -> ReLU -> (max) -> blur."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    downsample: str,
    padding: str,
    blur_size: int,
    blur_padding: str,
    aps_norm: str = "l2",
    rngs: nnx.Rngs,
  ):
    layers._check(downsample, DOWNSAMPLES, "downsample")
    self.downsample = downsample
    self.blur_size = blur_size
    self.blur_padding = layers._check(blur_padding, layers.BLUR_PADDINGS, "blur padding")
    self.aps_norm = layers._check(aps_norm, aps.NORMS, "APS norm")
    self.max_mode = "wrap" if padding == "circular" else "edge"
    stride = 2 if downsample == "stride" else 1
    self.conv = layers.PaddedConv(in_features, out_features, kernel_size, padding=padding, stride=stride, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.after_conv(self.conv(x))

  def after_conv(self, x: jax.Array) -> jax.Array:
    """Everything after the conv (bias included in x): downsampling and ReLU."""
    if self.downsample == "max":
      return jax.nn.relu(layers.max_pool_2x2(x))
    if self.downsample == "blur":
      x = jax.nn.relu(layers.max_pool_2x2_stride1(x))
      return layers.blur_downsample(x, self.blur_size, self.blur_padding)
    x = jax.nn.relu(x)
    if self.downsample in ("conv_blur", "avg_blur"):
      return layers.blur_downsample(x, self.blur_size, self.blur_padding)
    if self.downsample == "avg":
      return layers.avg_pool_2x2(x)
    if self.downsample == "aps":
      x = layers.dense_max(x, 2, self.max_mode)
      if self.blur_size > 1:
        x = layers.blur_downsample(x, self.blur_size, self.blur_padding, stride=1)
      return aps.aps_downsample(x, self.aps_norm)
    return x  # "stride" (subsampled inside the conv) or "none"


class Backbone(nnx.Module):
  """A stack of `Block`s; `widths` sets depth and channel counts."""

  def __init__(
    self,
    in_channels: int,
    widths: Sequence[int],
    kernel_size: int,
    *,
    downsample: str,
    padding: str,
    blur_size: int,
    blur_padding: str,
    aps_norm: str = "l2",
    rngs: nnx.Rngs,
  ):
    chans = [in_channels, *widths]
    self.blocks = nnx.List(
      [
        Block(
          cin,
          cout,
          kernel_size,
          downsample=downsample,
          padding=padding,
          blur_size=blur_size,
          blur_padding=blur_padding,
          aps_norm=aps_norm,
          rngs=rngs,
        )
        for cin, cout in zip(chans[:-1], chans[1:])
      ]
    )

  def __call__(self, x: jax.Array, start: int = 0) -> jax.Array:
    """The backbone's output; from block `start` on when x is already block `start - 1`'s output."""
    for block in list(self.blocks)[start:]:
      x = block(x)
    return x

  def features(self, x: jax.Array) -> list[jax.Array]:
    """Every block's output, for layer-wise representation analysis."""
    out = []
    for block in self.blocks:
      x = block(x)
      out.append(x)
    return out


class Head(nnx.Module):
  """What sits on the backbone: hidden fully connected layers (`hidden`) and the classifier (the output
  layer). Fine-tuning on new classes keeps `hidden` (it transfers, like VGG's fc6/fc7 in Biscione & Bowers
  2021) and re-initialises only `classifier`.

  `fc`: flatten -> [Dense -> ReLU] x len(hidden) -> Dense (the classic CNN+FC: every location has its own
  weights); `gap`: global average pool -> the same; `conv`: [1x1 conv -> ReLU] x len(hidden) -> 1x1-conv
  class maps, averaged (no dense layer, so the hidden layers are 1x1 convs too).
  """

  def __init__(
    self,
    kind: str,
    feature_shape: tuple[int, int, int],
    num_classes: int,
    *,
    hidden: Sequence[int] = (),
    rngs: nnx.Rngs,
  ):
    self.kind = layers._check(kind, HEADS, "head")
    hidden = tuple(int(h) for h in hidden)
    if any(h < 1 for h in hidden):
      raise ValueError(f"fc_hidden sizes must be >= 1, got {list(hidden)}")
    h, w, c = feature_shape
    dims = [h * w * c if kind == "fc" else c, *hidden]
    self.hidden = nnx.List([self._layer(d_in, d_out, rngs) for d_in, d_out in zip(dims[:-1], dims[1:])])
    self.classifier = self._layer(dims[-1], num_classes, rngs)

  def _layer(self, d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Module:
    if self.kind == "conv":
      return nnx.Conv(
        d_in,
        d_out,
        (1, 1),
        kernel_init=layers.lecun_normal_flat,
        conv_general_dilated=layers.conv_general_dilated,
        rngs=rngs,
      )
    return nnx.Linear(d_in, d_out, kernel_init=layers.lecun_normal_flat, rngs=rngs)

  def head_input(self, x: jax.Array) -> jax.Array:
    """The backbone's feature map as the first head layer reads it: flattened, pooled, or as is (`conv`)."""
    if self.kind == "fc":
      return x.reshape(x.shape[0], -1)
    if self.kind == "gap":
      return x.mean(axis=(1, 2))
    return x

  def hidden_features(self, x: jax.Array) -> list[jax.Array]:
    """Every hidden layer's output (after ReLU), for layer-wise representation analysis."""
    out, x = [], self.head_input(x)
    for layer in self.hidden:
      x = jax.nn.relu(layer(x))
      out.append(x)
    return out

  def pre_logits(self, x: jax.Array) -> jax.Array:
    """The classifier's input (the penultimate representation; see `predictor.layer_features`)."""
    feats = self.hidden_features(x)
    return feats[-1] if feats else self.head_input(x)

  def __call__(self, x: jax.Array) -> jax.Array:
    out = self.classifier(self.pre_logits(x))
    return out if self.kind != "conv" else out.mean(axis=(1, 2))


class ShiftNet(Network):
  """Backbone + head (`protocol.ShiftModel`). `head.classifier` is the only part that fine-tuning re-initialises
  for new classes.

  `blur_padding=None` follows the conv padding: circular for `circular` (so a blur keeps circular-shift
  equivariance), reflect (Zhang's default) otherwise. `aps_norm` (`l2`, `l1`, `linf`) ranks APS components.
  `fc_hidden` lists the hidden fully connected layers of the head (`Head`); they transfer to new classes
  with the backbone, and only the classifier is re-initialised.
  `object_first=False` turns off the blank-canvas shortcut of `on_canvas` / `on_grid` (same results, slower;
  for benchmarks and checks).
  """

  def __init__(
    self,
    *,
    num_classes: int,
    canvas_size: int,
    in_channels: int = 1,
    widths: Sequence[int] = (8, 16, 32),
    kernel_size: int = 3,
    downsample: str = "max",
    padding: str = "same",
    head: str = "fc",
    blur_size: int = 4,
    blur_padding: str | None = None,
    aps_norm: str = "l2",
    fc_hidden: Sequence[int] = (),
    object_first: bool = True,
    rngs: nnx.Rngs,
  ):
    layers._check(padding, layers.PADDINGS, "padding")
    self.object_first = object_first
    blur_padding = layers.default_blur_padding(padding) if blur_padding is None else blur_padding
    self.backbone = Backbone(
      in_channels,
      tuple(widths),
      kernel_size,
      downsample=downsample,
      padding=padding,
      blur_size=blur_size,
      blur_padding=blur_padding,
      aps_norm=aps_norm,
      rngs=rngs,
    )
    probe = jnp.zeros((1, canvas_size, canvas_size, in_channels), jnp.float32)
    feature_shape = jax.eval_shape(self.backbone, probe).shape[1:]
    if min(feature_shape[:2]) < 1:
      raise ValueError(f"canvas_size={canvas_size} is too small for {len(widths)} downsampling blocks")
    self.head = Head(head, feature_shape, num_classes, hidden=fc_hidden, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.head(self.backbone(x))

  def _shortcut(self, objects: jax.Array) -> bool:
    square = objects.shape[1] == objects.shape[2]  # canvas objects are; anything else takes the canvas path
    return self.object_first and square and object_first.supported(self.backbone.blocks[0]) is None

  def on_canvas(self, objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
    """Logits of objects (B, h, w, C) at (B, 2) locations on blank canvases: the same as
    `self(canvas.place(objects, locations, canvas_size))`, with the first block(s) run near the objects
    when they can be (`object_first.py`), which is several times less work."""
    if not self._shortcut(objects):
      return self(canvas.place(objects, locations, canvas_size))
    x, start = object_first.first_blocks(self.backbone.blocks, objects, locations, canvas_size)
    return self.head(self.backbone(x, start=start))

  def on_grid(self, objects: jax.Array, locations: jax.Array, canvas_size: int) -> jax.Array:
    """Logits of every object at every location, (L, B, classes): `on_canvas` for a location map, with the
    first block run once per object (and residue) rather than once per canvas."""
    if not self._shortcut(objects):
      return canvas.apply_on_grid(self, objects, locations, canvas_size)
    x, start = object_first.first_blocks_grid(self.backbone.blocks, objects, locations, canvas_size)
    logits = self.head(self.backbone(x, start=start))
    return logits.reshape(locations.shape[0], objects.shape[0], -1)
