"""ResNet-18-style backbone (He et al. 2016: BasicBlocks [2, 2, 2, 2]) with the same swappable parts as
`ShiftNet`: downsampling, padding and head (`cnn.Head`).

Every stride-2 operation (stem conv, stem max pool, first conv of stages 2-4 and its 1x1 shortcut) is
replaced according to `downsample`:
  stride  the standard network (conv stride 2; 3x3 max pool stride 2 in the ImageNet stem);
  blur    Zhang 2019's anti-aliased ResNet: conv stride 1 -> BN -> ReLU -> blur stride 2 (ConvBlurPool),
          max stride 1 -> blur stride 2 (MaxBlurPool), shortcut blur stride 2 -> 1x1 conv -> BN;
  aps     Chaman & Dokmanic 2021: the same positions with adaptive polyphase sampling instead of the
          subsampling (optionally after a stride-1 blur when blur_size > 1). The shortcut takes the
          polyphase component chosen by the main branch, so both branches stay aligned and the block is
          exactly shift-equivariant up to the chosen phase.
Stems: `cifar` (3x3 conv stride 1, no max pool) or `imagenet` (7x7 conv stride 2 + max pool stride 2).

Batch norm: `model.train()` normalises with batch statistics and updates the running averages;
`model.eval()` uses the running averages (`shiftbench.training.loop` and `shiftbench.evaluators.predictor`
switch modes).
Padding must keep sizes (`same` or `circular`) so residuals add up.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from shiftbench.models import aps, layers
from shiftbench.models.cnn import Head
from shiftbench.models.shift_model import Network

DOWNSAMPLES: tuple[str, ...] = ("stride", "blur", "aps")
STEMS: tuple[str, ...] = ("cifar", "imagenet")
BN_MOMENTUM = 0.9  # PyTorch's 0.1 update rate: running stats settle within a short laptop-scale run


class Down(nnx.Module):
  """The stride-2 step after a stride-1 operation (`blur` or `aps`); `stride` subsamples in the conv."""

  def __init__(self, downsample: str, blur_size: int, blur_padding: str, aps_norm: str):
    self.downsample, self.blur_size = downsample, blur_size
    self.blur_padding, self.aps_norm = blur_padding, aps_norm

  def blur(self, x: jax.Array, stride: int) -> jax.Array:
    if self.downsample == "aps" and self.blur_size == 1:
      return x
    return layers.blur_downsample(x, self.blur_size, self.blur_padding, stride=stride)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """Returns the downsampled map and, for APS, the chosen phase per example (for a shortcut)."""
    if self.downsample == "blur":
      return self.blur(x, 2), None
    x = self.blur(x, 1)
    index = aps.phase_index(x, self.aps_norm)
    return aps.select_phase(x, index), index


class BasicBlock(nnx.Module):
  """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus shortcut (1x1 conv + BN when the shape changes), ReLU."""

  def __init__(self, cin: int, cout: int, stride: int, *, padding: str, down: Down, rngs: nnx.Rngs):
    self.stride, self.down = stride, down
    conv_stride = stride if down.downsample == "stride" else 1
    self.conv1 = layers.PaddedConv(cin, cout, 3, padding=padding, stride=conv_stride, use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(cout, momentum=BN_MOMENTUM, rngs=rngs)
    self.conv2 = layers.PaddedConv(cout, cout, 3, padding=padding, use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(cout, momentum=BN_MOMENTUM, rngs=rngs)
    self.project = stride != 1 or cin != cout
    if self.project:
      self.short_conv = nnx.Conv(
        cin,
        cout,
        (1, 1),
        use_bias=False,
        kernel_init=layers.lecun_normal_flat,
        conv_general_dilated=layers.conv_general_dilated,
        rngs=rngs,
      )
      self.short_bn = nnx.BatchNorm(cout, momentum=BN_MOMENTUM, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = jax.nn.relu(self.bn1(self.conv1(x)))
    short = x
    if self.stride == 2:
      if self.down.downsample == "stride":
        short = x[:, ::2, ::2]  # a 1x1 conv with stride 2 reads exactly these pixels
      elif self.down.downsample == "blur":
        h, _ = self.down(h)
        short = self.down.blur(x, 2)
      else:
        h, index = self.down(h)
        short = aps.select_phase(self.down.blur(x, 1), index)
    h = self.bn2(self.conv2(h))
    if self.project:
      short = self.short_bn(self.short_conv(short))
    return jax.nn.relu(h + short)


class ResNetBackbone(nnx.Module):
  """Stem + 4 stages of BasicBlocks; stages 2-4 halve the resolution."""

  def __init__(
    self,
    in_channels: int,
    widths: Sequence[int],
    blocks: Sequence[int],
    *,
    stem: str,
    downsample: str,
    padding: str,
    blur_size: int,
    blur_padding: str,
    aps_norm: str,
    rngs: nnx.Rngs,
  ):
    self.stem_kind = layers._check(stem, STEMS, "stem")
    down = Down(downsample, blur_size, blur_padding, aps_norm)
    self.down = down
    self.max_mode = "wrap" if padding == "circular" else "edge"
    k, stem_stride = (3, 1) if stem == "cifar" else (7, 2)
    self.stem_conv = layers.PaddedConv(
      in_channels,
      widths[0],
      k,
      padding=padding,
      stride=stem_stride if downsample == "stride" else 1,
      use_bias=False,
      rngs=rngs,
    )
    self.stem_bn = nnx.BatchNorm(widths[0], momentum=BN_MOMENTUM, rngs=rngs)
    blocks_list = []
    cin = widths[0]
    for i, (cout, n) in enumerate(zip(widths, blocks)):
      for j in range(n):
        stride = 2 if i > 0 and j == 0 else 1
        blocks_list.append(BasicBlock(cin, cout, stride, padding=padding, down=down, rngs=rngs))
        cin = cout
    self.blocks = nnx.List(blocks_list)

  def stem(self, x: jax.Array) -> jax.Array:
    x = jax.nn.relu(self.stem_bn(self.stem_conv(x)))
    if self.stem_kind == "cifar":
      return x
    if self.down.downsample == "stride":  # 7x7 stride 2 done in the conv; 3x3 max pool stride 2
      return layers.dense_max(x, 3, self.max_mode)[:, ::2, ::2]
    x, _ = self.down(x)  # ConvBlurPool / conv + APS
    x, _ = self.down(layers.dense_max(x, 2, self.max_mode))  # MaxBlurPool / max + APS
    return x

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.features(x)[-1]

  def features(self, x: jax.Array) -> list[jax.Array]:
    """The stem's and every block's output, for layer-wise representation analysis."""
    out = [self.stem(x)]
    for block in self.blocks:
      out.append(block(out[-1]))
    return out


class ResNet(Network):
  """ResNet backbone + `cnn.Head` (`protocol.ShiftModel`, like `ShiftNet`), so the protocol re-initialises
  `head.classifier` only.

  Args:
    num_classes, canvas_size, in_channels: as for every model factory.
    widths: channels of the 4 stages (the stem uses the first); small by default for CPU runs.
    blocks: BasicBlocks per stage ([2, 2, 2, 2] is ResNet-18).
    stem: `cifar` or `imagenet`.
    downsample: `stride`, `blur` or `aps` (see the module docstring).
    padding: `same` (zeros) or `circular`.
    head: `fc`, `gap` or `conv`.
    fc_hidden: hidden fully connected layers of the head (they transfer; only the classifier is re-initialised).
    blur_size: binomial filter size 1-7 (for `aps`, a stride-1 blur before selection when > 1).
    blur_padding: None follows the conv padding (circular stays circular, else reflect).
    aps_norm: `l2`, `l1` or `linf`.
  """

  def __init__(
    self,
    *,
    num_classes: int,
    canvas_size: int,
    in_channels: int = 1,
    widths: Sequence[int] = (16, 32, 64, 128),
    blocks: Sequence[int] = (2, 2, 2, 2),
    stem: str = "cifar",
    downsample: str = "stride",
    padding: str = "same",
    head: str = "gap",
    blur_size: int = 4,
    blur_padding: str | None = None,
    aps_norm: str = "l2",
    fc_hidden: Sequence[int] = (),
    rngs: nnx.Rngs,
  ):
    layers._check(downsample, DOWNSAMPLES, "downsample")
    layers._check(padding, ("same", "circular"), "ResNet padding")  # residuals need size-preserving convs
    layers._check(aps_norm, aps.NORMS, "APS norm")
    if len(widths) != len(blocks):
      raise ValueError(f"widths {list(widths)} and blocks {list(blocks)} must have the same length")
    blur_padding = layers.default_blur_padding(padding) if blur_padding is None else blur_padding
    layers._check(blur_padding, layers.BLUR_PADDINGS, "blur padding")
    self.backbone = ResNetBackbone(
      in_channels,
      tuple(widths),
      tuple(blocks),
      stem=stem,
      downsample=downsample,
      padding=padding,
      blur_size=blur_size,
      blur_padding=blur_padding,
      aps_norm=aps_norm,
      rngs=rngs,
    )
    # Shape probe on a merged copy: a train-mode BatchNorm call would otherwise write tracers into the stats.
    graphdef, state = nnx.split(self.backbone)
    probe = jax.ShapeDtypeStruct((1, canvas_size, canvas_size, in_channels), jnp.float32)
    feature_shape = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, probe).shape[1:]
    if min(feature_shape[:2]) < 1:
      raise ValueError(f"canvas_size={canvas_size} is too small for this ResNet")
    self.head = Head(head, feature_shape, num_classes, hidden=fc_hidden, rngs=rngs)
