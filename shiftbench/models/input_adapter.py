"""The input adapter: grayscale canvases into networks that expect 3-channel ImageNet input.

torchvision's ImageNet weights were trained on RGB images normalised per channel with ImageNet's mean and
std (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225), on pixels in [0, 1]. The canvases are 1-channel, in
[0, 1]. Kinds (named in the model config, so a row records which one ran):
  imagenet  repeat the channel to 3, then (x - mean) / std: what ImageNet weights expect (required by the
            `imagenet` pretrain regime);
  repeat    repeat the channel to 3, no normalisation;
  none      pass the data's channels to the first conv as they are.
The adapter has no parameters: it transfers trivially and never trains.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

KINDS: tuple[str, ...] = ("imagenet", "repeat", "none")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InputAdapter(nnx.Module):
  """Maps (B, H, W, in_channels) canvases to what the first conv reads (`out_channels`)."""

  def __init__(self, kind: str, in_channels: int):
    if kind not in KINDS:
      raise ValueError(f"unknown input_adapter {kind!r}; allowed: {', '.join(KINDS)}")
    if kind != "none" and in_channels not in (1, 3):
      raise ValueError(f"input_adapter {kind!r} needs 1- or 3-channel input, got {in_channels} channels")
    self.kind, self.in_channels = kind, int(in_channels)
    self.out_channels = self.in_channels if kind == "none" else 3

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.kind == "none":
      return x
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    if self.kind == "imagenet":
      x = (x - jnp.asarray(IMAGENET_MEAN, x.dtype)) / jnp.asarray(IMAGENET_STD, x.dtype)
    return x
