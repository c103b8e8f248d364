"""The paper-scale contestants of scripts/bench.py (`--preset paper`): torchvision's VGG16 at 224 px with
50-px objects, batch 32, Adam 1e-4, as experiment=paper trains and evaluates it (docs/paper.md).

shiftbench side: `shiftbench.models.VGG(depth=16)` with its `imagenet` input adapter (gray -> 3 channels,
ImageNet mean/std), trained by `train.train` and mapped by `evaluation.location_stats`, the protocol's path,
its first stages run near the object (exact; `--alternatives` also times them on the whole canvas).
PyTorch side: the twin of torchvision's VGG16 from scripts/torchvision_twins.py, the module whose outputs the
known-answer tests (tests/test_torchvision_models.py, through tests/fixtures/torch_twins.npz) check the flax
networks against, so both sides are proven to compute the same function; it is imported, not copied. The same
adapter runs in front of it, canvases are composed on the device by `torch_twin.place`, channels_last.
`tv_width` < 1 scales every channel count on both sides (the same topology, small enough for a CPU).
"""

from __future__ import annotations

import torch
import torchvision_twins
from flax import nnx
from torch import nn

from shiftbench.models import VGG

ARCH, DEPTH, CLASSES = "vgg16", 16, 10
# What --preset paper changes in bench.py's defaults (any flag given on the command line still wins).
DEFAULTS = {
  "canvas": 224,
  "object": 50,
  "batch": 32,
  "lr": 1e-4,
  "steps": 20,
  "reps": 3,
  "objects": 1000,
  "eval_objects": 128,
  "grid_stride": 25,  # experiment=paper's grid: 8 x 8 = 64 locations at 224 px
  "e2e_steps": 0,
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def jax_vgg(width: float, canvas_size: int, seed: int = 0, object_first: bool = True) -> VGG:
  """`object_first`: the first stages near the object (models/vgg_object_first.py), as the protocol runs them."""
  return VGG(
    num_classes=CLASSES,
    canvas_size=canvas_size,
    depth=DEPTH,
    width=width,
    object_first=object_first,
    rngs=nnx.Rngs(seed),
  )


class TorchVGG(nn.Module):
  """The twin behind shiftbench's `imagenet` adapter: (B, 1, H, W) canvases in [0, 1] -> logits."""

  def __init__(self, width: float):
    super().__init__()
    self.net = torchvision_twins.build(ARCH, width, CLASSES)
    self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
    self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
    return self.net.classifier(torch.flatten(self.net.avgpool(self.net.features(x)), 1))


def torch_vgg(width: float) -> nn.Module:
  return TorchVGG(width).to(memory_format=torch.channels_last)


def train_flops(width: float, canvas_size: int) -> float:
  """FLOPs of one training image of VGG16 at `width`: convs and the dense layers, forward + both gradients
  (no input gradient for the first conv). Pooling, the adapter and elementwise ops are not counted."""
  side, cin, total, first = canvas_size, 3, 0.0, True
  for v in torchvision_twins.VGG_CONFIGS[DEPTH]:
    if v == "M":
      side //= 2
      continue
    cout = torchvision_twins.scaled(v, width)
    total += 2.0 * side * side * 9 * cin * cout * (2 if first else 3)
    cin, first = cout, False
  fc = torchvision_twins.scaled(4096, width)
  dims = [cin * 49, fc, fc, CLASSES]
  return total + sum(3 * 2.0 * a * b for a, b in zip(dims[:-1], dims[1:]))
