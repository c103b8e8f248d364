"""Peak host memory of one 224-px location-map chunk, against `eval.batch_size: auto`'s estimate.

Builds a torchvision-topology network at full width (random weights), takes the chunk `auto` gives on this
device, runs `location_maps.location_stats` over it once, and prints the process's peak resident memory
above what it held before the map, next to the estimate (`batching.model_activation_bytes` x canvases).
On CPU, JAX's buffers are host memory, so the resident-set peak is the device peak.

  python scripts/map_memory.py --model vgg16                 # the path training and maps use
  python scripts/map_memory.py --model vgg16 --no-object-first --batch 64   # the whole-canvas path the estimate counts
"""

import argparse
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shiftbench.evaluators import batching, location_maps
from shiftbench.evaluators.predictor import Predictor
from shiftbench.models import VGG, DenseNet


def peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main() -> dict:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", choices=["vgg16", "densenet121"], default="vgg16")
  p.add_argument("--canvas", type=int, default=224)
  p.add_argument("--object", type=int, default=50)
  p.add_argument("--objects", type=int, default=16, help="objects per chunk")
  p.add_argument("--batch", default="auto", help="canvases per chunk: auto (eval.batch_size's default) or a number")
  p.add_argument("--no-object-first", action="store_true", help="VGG: place every canvas (the estimate's path)")
  args = p.parse_args()
  rngs = nnx.Rngs(0)
  if args.model == "vgg16":
    model = VGG(num_classes=10, canvas_size=args.canvas, depth=16, object_first=not args.no_object_first, rngs=rngs)
  else:
    model = DenseNet(num_classes=10, canvas_size=args.canvas, rngs=rngs)
  model.eval()
  per_canvas = batching.model_activation_bytes(model, args.canvas, 1)
  # The model's own count sizes `auto`: no widths needed.
  batch = batching.resolve_batch_size(args.batch, args.canvas, [], lambda: per_canvas)
  n_loc = max(1, batch // args.objects)
  rng = np.random.default_rng(0)
  objects = jnp.asarray(rng.uniform(size=(args.objects, args.object, args.object, 1)).astype(np.float32))
  labels = jnp.asarray(rng.integers(0, 10, args.objects))
  m = args.canvas - args.object
  locations = rng.integers(0, m + 1, (n_loc, 2)).astype(np.int32)
  before = peak_rss_bytes()
  start = time.perf_counter()
  stats = location_maps.location_stats(Predictor(model, args.canvas), objects, labels, locations, batch_size=batch)
  jax.block_until_ready(stats.correct)
  out = {
    "model": args.model,
    "object_first": args.model == "vgg16" and not args.no_object_first,
    "device": str(jax.devices()[0]),
    "canvases_per_chunk": n_loc * args.objects,
    "auto_batch_size": batch,
    "estimate_GiB": round(per_canvas * n_loc * args.objects / 2**30, 2),
    "peak_above_baseline_GiB": round((peak_rss_bytes() - before) / 2**30, 2),
    "peak_rss_GiB": round(peak_rss_bytes() / 2**30, 2),
    "seconds": round(time.perf_counter() - start, 1),
  }
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main()
