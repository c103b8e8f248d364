"""The PyTorch reference for scripts/bench.py: the same network, canvases and data paths in PyTorch.

`TorchTwin` mirrors `shiftbench.models.ShiftNet` for the presets with a PyTorch equivalent (max-pool
backbone, `same` padding, `fc` or `gap` head): same layer shapes and FLOPs, PyTorch's default init.
Two data paths: `place` composes canvases on the tensor side, on whatever device the objects are on (the
fast way: a gather, no scatter), `HostCanvasDataset` pastes each object into a numpy canvas in
`__getitem__` (the way published code does it, behind a DataLoader). `place_scatter` is the earlier
tensor-side version (an indexed assignment), kept to measure what the gather saves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED = {"downsample": ("max",), "padding": ("same",), "head": ("fc", "gap")}


def check_supported(model_cfg: dict) -> str | None:
  """None if the preset has a PyTorch twin, else the reason it has none."""
  for key, allowed in SUPPORTED.items():
    if model_cfg.get(key) not in allowed:
      return f"{key}={model_cfg.get(key)!r} has no PyTorch twin (supported: {', '.join(allowed)})"
  return None


class TorchTwin(nn.Module):
  """conv (same padding) -> 2x2 max pool -> ReLU per block, then flatten/GAP -> [linear -> ReLU] x
  len(fc_hidden) -> linear (shiftbench's `Head` with its hidden FC layers)."""

  def __init__(
    self,
    *,
    num_classes: int,
    canvas_size: int,
    widths: Sequence[int],
    kernel_size: int = 3,
    head: str = "fc",
    in_channels: int = 1,
    fc_hidden: Sequence[int] = (),
  ):
    super().__init__()
    chans = [in_channels, *widths]
    k = kernel_size
    # `same` in shiftbench pads (k-1)//2 before and k//2 after; equal for the odd kernels of the presets.
    self.pad = ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2)
    self.convs = nn.ModuleList(nn.Conv2d(a, b, k) for a, b in zip(chans[:-1], chans[1:]))
    side = canvas_size
    for _ in widths:
      side //= 2
    self.head = head
    dims = [side * side * widths[-1] if head == "fc" else widths[-1], *fc_hidden]
    self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
    self.fc = nn.Linear(dims[-1], num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for conv in self.convs:
      x = F.relu(F.max_pool2d(conv(F.pad(x, self.pad)), 2))
    # flatten in NHWC order like the JAX model, so the fc weights have the same layout and size
    x = x.permute(0, 2, 3, 1).flatten(1) if self.head == "fc" else x.mean((2, 3))
    for layer in self.hidden:
      x = F.relu(layer(x))
    return self.fc(x)


def pad_objects(objects: torch.Tensor) -> torch.Tensor:
  """(N, C, h, w) objects -> (N, h + 1, w + 1, C) channels-last with one zero row and column at the end,
  which `place` reads for every canvas pixel outside the object. Done once, outside the timed step."""
  return F.pad(objects, (0, 1, 0, 1)).permute(0, 2, 3, 1).contiguous()


def place(padded: torch.Tensor, locations: torch.Tensor, canvas_size: int) -> torch.Tensor:
  """(B, h + 1, w + 1, C) padded objects (`pad_objects`) at (B, 2) top-left locations -> (B, C, H, W)
  canvases in channels_last memory, by one gather: canvas pixel (Y, X) reads object pixel
  (Y - y, X - x), or the zero row/column when that is outside the object. No scatter, no mask."""
  b, h1, w1, _ = padded.shape
  ar = torch.arange(canvas_size, device=padded.device)
  rows = ar[None, :] - locations[:, :1]  # (B, H)
  cols = ar[None, :] - locations[:, 1:]  # (B, W)
  rows = torch.where((rows >= 0) & (rows < h1 - 1), rows, h1 - 1)
  cols = torch.where((cols >= 0) & (cols < w1 - 1), cols, w1 - 1)
  batch = torch.arange(b, device=padded.device)[:, None, None]
  return padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # NHWC memory, NCHW view


def place_scatter(objects: torch.Tensor, locations: torch.Tensor, canvas_size: int) -> torch.Tensor:
  """(B, C, h, w) float objects at (B, 2) top-left locations -> (B, C, H, W) zero canvases, by an indexed
  assignment (a scatter): the twin's placement before the gather."""
  b, c, h, w = objects.shape
  out = objects.new_zeros(b, c, canvas_size, canvas_size)
  dev = objects.device
  rows = (locations[:, 0, None] + torch.arange(h, device=dev))[:, None, :, None]
  cols = (locations[:, 1, None] + torch.arange(w, device=dev))[:, None, None, :]
  out[
    torch.arange(b, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None], rows, cols
  ] = objects
  return out


class HostCanvasDataset(torch.utils.data.Dataset):
  """Each item pastes one uint8 object into a numpy canvas at its location: host-side composition."""

  def __init__(
    self, images: np.ndarray, labels: np.ndarray, canvas_size: int, location: tuple[int, int] | None, seed: int = 0
  ):
    self.images, self.labels, self.canvas_size = images, labels, canvas_size
    self.location = location  # None: uniform over valid locations (translate)
    self.rng = np.random.default_rng(seed)

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
    obj = self.images[i]
    h, w, c = obj.shape
    if self.location is None:
      y, x = self.rng.integers(0, self.canvas_size - h + 1, 2)
    else:
      y, x = self.location
    canvas = np.zeros((c, self.canvas_size, self.canvas_size), np.float32)
    canvas[:, y : y + h, x : x + w] = obj.transpose(2, 0, 1) / 255.0
    return torch.from_numpy(canvas), int(self.labels[i])
