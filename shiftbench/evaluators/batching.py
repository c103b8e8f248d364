"""Batch sizing: how many canvases one forward pass of the evaluation paths takes (`eval.batch_size`).

`auto` is sized per backend and problem: CPU_BATCH on CPU (fewer when a model's own count says they would
not fit in host memory), on accelerators the largest power of two whose activations fit in a fraction of
the device's free memory. A model's own count (`model_activation_bytes`) comes from XLA's buffer
assignment of its compiled forward pass; the small CNNs use the width-based bound (`activation_bytes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from shiftbench.evaluators import predictor

CPU_BATCH = 512  # canvases per pass on CPU: cache-sized chunks beat large ones (docs/performance.md)
# Accelerators want large passes; the ceiling is the largest size measured (docs/performance.md).
ACCELERATOR_BATCH = (1024, 8192)
MEMORY_FRACTION = 0.25  # of the device's free memory that one chunk's activations may take


def activation_bytes(canvas_size: int, widths: Sequence[int]) -> int:
  """A generous bound on one canvas's live activations in a forward pass: every block's conv output
  at full resolution (before its 2x2 downsampling), three fp32 copies (conv, pool, temporaries).

  Args:
    canvas_size: side of the square canvas.
    widths: the model's conv widths, one per block.

  Returns:
    Bytes per canvas.
  """
  side, total = canvas_size, 0
  for w in widths:
    total += side * side * int(w)
    side = max(1, side // 2)
  return 3 * 4 * total


def model_activation_bytes(
  model: nnx.Module, canvas_size: int, in_channels: int, batches: tuple[int, int] = (4, 8)
) -> int:
  """Per-canvas device memory of a forward pass that returns every layer's similarity features.

  The model's own count as the compiler lays it out: XLA's buffer assignment (`memory_analysis`, temporaries +
  outputs) of `predictor.layer_features` compiled for this device at two batch sizes, the difference per
  canvas (weights and constants drop out). The features are what similarity keeps until its cosines; the
  temporaries are the forward pass's live activations, which a location map needs too, so one count sizes
  the three prediction paths. Compiled from abstract shapes: nothing is allocated or run.

  Args:
    model: the network (concrete or from `nnx.eval_shape`), counted in the mode it is in.
    canvas_size: side of the square canvas.
    in_channels: channels of a canvas.
    batches: the two batch sizes whose difference is counted.

  Returns:
    Bytes per canvas, at least 1.
  """
  graphdef, state = nnx.split(model)
  state = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), state)
  fn = jax.jit(lambda s, x: predictor.layer_features(nnx.merge(graphdef, s), x))  # for the default device

  def used(batch: int) -> int:
    x = jax.ShapeDtypeStruct((batch, canvas_size, canvas_size, in_channels), jnp.float32)
    ma = fn.lower(state, x).compile().memory_analysis()
    return int(ma.temp_size_in_bytes + ma.output_size_in_bytes)

  lo, hi = batches
  return max(1, (used(hi) - used(lo)) // (hi - lo))


def host_available_bytes() -> int:
  """Memory the host can still give this process (free plus reclaimable cache): on CPU, JAX's buffers."""
  import psutil

  return int(psutil.virtual_memory().available)


def _largest_power_of_two(start: int, limit: int) -> int:
  batch = start
  while batch * 2 <= limit:
    batch *= 2
  return batch


def auto_batch_size(
  canvas_size: int,
  model_widths: Sequence[Sequence[int]],
  device: jax.Device | None = None,
  per_canvas_bytes: int | None = None,
) -> int:
  """Canvases per forward pass for this backend and problem size (`eval.batch_size: auto`).

  Args:
    canvas_size: side of the square canvas.
    model_widths: each model's conv widths; the batch is sized for the largest.
    device: the device to size for; None is JAX's default device.
    per_canvas_bytes: the largest model's own count (`model_activation_bytes`); None estimates it from
      `model_widths` (`activation_bytes`, the small-CNN bound).

  Returns:
    On CPU, CPU_BATCH, or fewer when a model's own count says CPU_BATCH canvases would take more than
    MEMORY_FRACTION of the host's available memory (VGG16's whole-canvas pass at 224 px: ~30 MiB per
    canvas, so 128 with ~20 GiB available; 256 aborted with `std::bad_alloc`, docs/paper.md).
    On accelerators, the largest power of two up to ACCELERATOR_BATCH's ceiling whose activations fit in
    MEMORY_FRACTION of the device's free memory (from `memory_stats`; the ceiling when the backend does
    not report it); at least ACCELERATOR_BATCH's floor, unless `per_canvas_bytes` says fewer fit (VGG16 at
    224 px: 128 on a 16 GB GPU, not 1024).
  """
  device = device or jax.devices()[0]
  if device.platform == "cpu":
    if per_canvas_bytes is None:  # the small CNNs: 512 canvases take well under 1 GiB at 64 px
      return CPU_BATCH
    # XLA:CPU's convolutions take workspace that buffer assignment does not count (a 3x3 conv over
    # 256 x 224^2 x 64 peaked at twice its input + output), hence the same quarter as on accelerators.
    fit = int(MEMORY_FRACTION * host_available_bytes()) // per_canvas_bytes
    return _largest_power_of_two(1, min(fit, CPU_BATCH))
  lo, hi = ACCELERATOR_BATCH
  try:
    stats = device.memory_stats() or {}
  except Exception:  # noqa: BLE001  (not every backend implements it)
    stats = {}
  if "bytes_limit" not in stats:
    return hi
  free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
  per_canvas = per_canvas_bytes or max(activation_bytes(canvas_size, w) for w in model_widths)
  fit = int(MEMORY_FRACTION * free) // max(1, per_canvas)
  # The floor stays for the width-based bound (generous: three copies of every block); a model's own count
  # is what it needs, so below the floor a smaller batch is the one that fits.
  return _largest_power_of_two(lo if fit >= lo or per_canvas_bytes is None else 1, min(fit, hi))


def resolve_batch_size(
  value: int | str,
  canvas_size: int,
  model_widths: Sequence[Sequence[int]],
  per_canvas_bytes: Callable[[], int | None] | None = None,
) -> int:
  """`eval.batch_size` as a number: `auto` (see `auto_batch_size`) or a positive int.

  Args:
    value: the setting, `auto` or a positive int (or its string).
    canvas_size: side of the square canvas.
    model_widths: each model's conv widths (for the width-based bound).
    per_canvas_bytes: the models' own count, or None for models the width bound covers; called only for
      `auto`, as it compiles the models from abstract shapes.

  Returns:
    Canvases per forward pass.

  Raises:
    ValueError: `value` is neither `auto` nor a positive int.
  """
  if isinstance(value, str) and value.strip().lower() == "auto":
    return auto_batch_size(canvas_size, model_widths, per_canvas_bytes=per_canvas_bytes() if per_canvas_bytes else None)
  try:
    batch = int(value)
  except (TypeError, ValueError):
    raise ValueError(f"eval.batch_size must be a positive int or 'auto', got {value!r}") from None
  if batch < 1:
    raise ValueError(f"eval.batch_size must be a positive int or 'auto', got {value!r}")
  return batch
