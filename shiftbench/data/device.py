"""Objects on the device: a split's uint8 images and int32 labels, put there once and indexed by every
jitted step and evaluation (canvases are composed from them inside the compiled programs)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class DeviceObjects:
  """A split of objects living on the device: uint8 images (N, h, w, C) and int32 labels (N,)."""

  images: jax.Array
  labels: jax.Array
  num_classes: int

  @classmethod
  def from_numpy(cls, images: np.ndarray, labels: np.ndarray, num_classes: int) -> DeviceObjects:
    return cls(
      jax.device_put(np.asarray(images, np.uint8)), jax.device_put(np.asarray(labels, np.int32)), int(num_classes)
    )

  def __len__(self) -> int:
    return int(self.images.shape[0])
