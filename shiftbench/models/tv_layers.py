"""Layers shared by the torchvision-compatible networks (`vgg.py`, `resnet_tv.py`, `densenet.py`).

Each layer computes what the PyTorch layer of the same role computes on NCHW input, here on NHWC:
  conv:             `nn.Conv2d(cin, cout, k, stride, padding)`, zero padding on both sides;
  batch_norm:       `nn.BatchNorm2d` (eps 1e-5, running averages updated at PyTorch's rate 0.1);
  max_pool_3x3_s2:  `nn.MaxPool2d(3, 2, padding=1)` (padding never wins a max);
  adaptive_avg_pool: `nn.AdaptiveAvgPool2d(out)`: output cell i averages input rows
                    floor(i * n / out) .. ceil((i + 1) * n / out) - 1, so any input size works;
  Head:             pool -> flatten in PyTorch's (C, H, W) order -> hidden Linear + ReLU (+ dropout) ->
                    classifier, so `Linear` weights are the PyTorch ones transposed, nothing permuted.
Every network exposes `torchvision_layers()`: (PyTorch name prefix, layer) pairs in state-dict order, which
`torchvision_weights` reads to load or check a state dict one to one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shiftbench.models import layers
from shiftbench.models.shift_model import Network


def host_normal(std_of_shape: Callable[[tuple[int, ...]], float]) -> Callable:
  """A zero-mean normal initializer drawn with numpy from the jax key's bits (under a trace: with jax).

  Eager `jax.random.normal` compiles one XLA program per shape: ~0.6 s each on the 2-core CPU here, so
  building DenseNet-121 (~120 distinct shapes) took over a minute; drawn on the host it takes well under
  a second. Same key, same numbers.
  """

  def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    std = std_of_shape(tuple(shape))
    if isinstance(key, jax.core.Tracer):
      return std * jax.random.normal(key, shape, dtype)
    bits = np.asarray(jax.random.key_data(key)).ravel().tolist()
    return jnp.asarray(np.random.default_rng(bits).standard_normal(shape, np.float32) * std, dtype)

  return init


# torchvision initialises convs with He's normal init on fan-out (kaiming_normal_, mode="fan_out"): HWIO kernels.
HE_FAN_OUT = host_normal(lambda s: float(np.sqrt(2.0 / (s[0] * s[1] * s[3]))))
LECUN = host_normal(lambda s: float(np.sqrt(1.0 / s[0])))  # Linear (in, out): flax's default scale
BN_MOMENTUM = 0.9  # flax's decay; PyTorch's momentum 0.1
BN_EPS = 1e-5

TorchLayers = Iterator[tuple[str, nnx.Module]]


def scaled(channels: int, width: float) -> int:
  """`channels` times the width multiplier, at least 1 (the same topology at a fraction of the cost)."""
  return max(1, round(channels * float(width)))


def conv(
  cin: int, cout: int, k: int, *, stride: int = 1, padding: int = 0, bias: bool = False, rngs: nnx.Rngs
) -> nnx.Conv:
  """`nn.Conv2d(cin, cout, k, stride, padding, bias=bias)` as an NHWC/HWIO conv."""
  pad = ((padding, padding), (padding, padding))
  return nnx.Conv(
    cin,
    cout,
    (k, k),
    strides=stride,
    padding=pad,
    use_bias=bias,
    kernel_init=HE_FAN_OUT,
    conv_general_dilated=layers.conv_general_dilated,
    rngs=rngs,
  )


def batch_norm(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(channels, momentum=BN_MOMENTUM, epsilon=BN_EPS, rngs=rngs)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """`nn.MaxPool2d(3, stride=2, padding=1)`: output (n - 1) // 2 + 1, window centred on every 2nd pixel.

  `dense_max` pads by replicating the border, which gives the same maxima as PyTorch's -inf padding.
  """
  return layers.dense_max(x, 3, "edge")[:, ::2, ::2]


def _pool_matrix(n: int, out: int) -> np.ndarray:
  m = np.zeros((out, n), np.float32)
  for i in range(out):
    start, end = (i * n) // out, -(-((i + 1) * n) // out)
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool(x: jax.Array, out: int) -> jax.Array:
  """`nn.AdaptiveAvgPool2d(out)` on NHWC: (B, H, W, C) -> (B, out, out, C)."""
  h, w = x.shape[1:3]
  if out == 1:
    return x.mean(axis=(1, 2), keepdims=True)
  if (h, w) == (out, out):
    return x
  return jnp.einsum(
    "ph,qw,bhwc->bpqc", _pool_matrix(h, out), _pool_matrix(w, out), x, precision=jax.lax.Precision.HIGHEST
  )


class Head(nnx.Module):
  """Pool -> flatten (C, H, W) -> [Linear -> ReLU -> Dropout] x hidden -> classifier.

  The interface of `cnn.Head` (`hidden`, `classifier`, `head_input`, `hidden_features`, `pre_logits`), so
  the protocol re-initialises only `classifier` and similarity reads the hidden layers (VGG's fc6/fc7).
  Dropout follows torchvision's VGG classifier (Linear, ReLU, Dropout); it is off in eval mode.
  """

  def __init__(
    self,
    channels: int,
    pool: int,
    hidden: Sequence[int],
    num_classes: int,
    *,
    dropout: float = 0.0,
    linear_init=None,
    rngs: nnx.Rngs,
  ):
    self.pool = int(pool)
    dims = [channels * self.pool * self.pool, *(int(h) for h in hidden)]
    init = {"kernel_init": LECUN if linear_init is None else linear_init, "bias_init": nnx.initializers.zeros}
    self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs, **init) for a, b in zip(dims[:-1], dims[1:])])
    self.drop = nnx.List([nnx.Dropout(dropout, rngs=rngs) for _ in hidden]) if dropout > 0 else None
    self.classifier = nnx.Linear(dims[-1], num_classes, rngs=rngs, **init)

  def head_input(self, x: jax.Array) -> jax.Array:
    x = adaptive_avg_pool(x, self.pool)
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # PyTorch's flatten order

  def hidden_features(self, x: jax.Array) -> list[jax.Array]:
    out, x = [], self.head_input(x)
    for i, layer in enumerate(self.hidden):
      x = jax.nn.relu(layer(x))
      if self.drop is not None:
        x = self.drop[i](x)
      out.append(x)
    return out

  def pre_logits(self, x: jax.Array) -> jax.Array:
    feats = self.hidden_features(x)
    return feats[-1] if feats else self.head_input(x)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.classifier(self.pre_logits(x))


class TorchvisionNet(Network):
  """Backbone (input adapter first, then torchvision's layers; `features(x)` per block) + `Head`.

  `arch` names the torchvision architecture (a key of `torchvision_weights.ARCHS`); subclasses build
  `self.backbone` (with its `adapter`, an `InputAdapter`) and `self.head` and list their layers in
  `torchvision_layers()` in state-dict order.
  """

  arch: str = ""

  @property
  def input_adapter(self) -> str | None:
    return self.backbone.adapter.kind

  def torchvision_layers(self) -> TorchLayers:
    yield from self.backbone.torchvision_layers()
    for i, layer in enumerate([*self.head.hidden, self.head.classifier]):
      yield self.head_names[i], layer
