"""Cost of one full location map relative to the bare forward passes it needs, measured in one run.

`location_maps.predict_grid` composes every canvas on the device inside the jitted program and chunks over
(locations x objects); the design asks that this costs about as much as the forward passes alone (docs/performance.md).
The baseline runs the same model, in the same chunk shape, the same number of times, on canvases that
were composed beforehand (so it does no placement, no padding and no host work). Models whose first
blocks run near the object (`models/object_first.py`) can make the map cheaper than the bare passes over
whole canvases: a ratio below 1.

Run: PYTHONPATH=. python scripts/bench_eval.py [--objects 256] [--stride 1] [--head fc]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shiftbench.data import canvas
from shiftbench.evaluators import chunks, location_maps
from shiftbench.evaluators.predictor import Predictor
from shiftbench.models import ShiftNet


def _best_of_interleaved(fns, repeats: int) -> list[float]:
  """Best time of each function, run alternately so load from other processes hits both alike."""
  best = [float("inf")] * len(fns)
  for _ in range(repeats):
    for i, fn in enumerate(fns):
      start = time.perf_counter()
      fn()
      best[i] = min(best[i], time.perf_counter() - start)
  return best


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--objects", type=int, default=128)
  parser.add_argument("--canvas", type=int, default=32)
  parser.add_argument("--object-size", type=int, default=12)
  parser.add_argument("--stride", type=int, default=1, help="grid stride (1 = the full map)")
  parser.add_argument("--head", default="fc")
  parser.add_argument("--batch", type=int, default=512, help="canvases per chunk (eval.batch_size)")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()

  spec = canvas.CanvasSpec(args.canvas, args.object_size)
  grid = canvas.location_grid(spec, args.stride)
  model = ShiftNet(num_classes=10, canvas_size=spec.canvas_size, head=args.head, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  objects = jax.device_put(rng.integers(0, 256, (args.objects, spec.object_size, spec.object_size, 1), np.uint8))

  def full_map():
    return location_maps.predict_grid(Predictor(model, spec.canvas_size), objects, grid, args.batch)

  # The same chunking predict_grid uses, so both sides run identical forward-pass shapes and counts.
  loc_chunk, obj_chunk = chunks.chunk_shape(len(grid), args.objects, args.batch)
  n_map_chunks = -(-len(grid) // loc_chunk) * -(-args.objects // obj_chunk)  # incl. padding
  n_chunks = -(-len(grid) * args.objects // (loc_chunk * obj_chunk))  # the fewest that hold every canvas
  graphdef, state = nnx.split(model)
  x = canvas.place_grid(
    objects[:obj_chunk].astype(jnp.float32) / 255.0, jnp.asarray(grid[:loc_chunk]), spec.canvas_size
  )
  x = jax.block_until_ready(x.reshape(-1, *x.shape[2:]))  # composed before timing starts

  @jax.jit
  def forward(state, x):
    return jnp.argmax(nnx.merge(graphdef, state)(x), -1).astype(jnp.int32)

  def bare():
    outs = [forward(state, x) for _ in range(n_chunks)]
    return np.asarray(jnp.concatenate(outs))  # to host, as predict_grid does

  full_map(), bare()  # compile both
  t_map, t_bare = _best_of_interleaved([full_map, bare], args.repeats)
  canvases = len(grid) * args.objects
  print(
    f"device: {jax.devices()[0].device_kind}; grid {len(grid)} locations x {args.objects} objects = "
    f"{canvases} canvases (map: {n_map_chunks} chunks of {loc_chunk * obj_chunk}; bare: {n_chunks})"
  )
  print(f"location map (predict_grid):  {t_map:.3f} s  ({canvases / t_map:,.0f} canvases/s)")
  print(f"bare forward passes:          {t_bare:.3f} s  ({n_chunks * loc_chunk * obj_chunk / t_bare:,.0f} canvases/s)")
  print(f"ratio map / bare: {t_map / t_bare:.2f}x (target <= 1.2x)")


if __name__ == "__main__":
  main()
