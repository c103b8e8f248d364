"""shiftbench vs PyTorch on the same network, canvases and optimiser, measured side by side in one run.

  PYTHONPATH=. python scripts/bench.py --out bench.json          # quick geometry: 32px canvas, 12px objects
  PYTHONPATH=. python scripts/bench.py --canvas 64 --object 28 --widths 16,32,64 --batch 128

Three comparisons, each interleaved (shiftbench block, PyTorch block, repeat) after warm-up, so machine
load hits both sides alike; ratios are per repetition, reported as median [min, max]:
  train: img/s of the training step (translate placement, Adam), per model preset with a PyTorch twin;
  eval:  a location map, i.e. forward passes over locations x objects;
  e2e:   the quick protocol reduced to one row (scratch, full fine-tune at one location, the curve maps
         along the way and the final map) vs PyTorch with host-composed canvases in a DataLoader.
Objects are random uint8 images (no dataset download); accuracy is not the point, cost is.

Both sides compute the same function. shiftbench runs its first block on the objects rather than on the
blank canvas around them (models/object_first.py: exact, checked in tests/test_object_first.py); the
PyTorch twin convolves whole canvases, as published code does. `--alternatives` also times shiftbench
with that shortcut off. GFLOP/s counts the whole-canvas network's FLOPs (canvas-equivalent), so with the
shortcut on it is throughput in the twin's units, not the FLOPs the CPU executed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F
from flax import nnx
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_e2e  # noqa: E402  (scripts/ siblings)
import torch_twin  # noqa: E402

from shiftbench import canvas, evaluation, train  # noqa: E402
from shiftbench.models import ShiftNet  # noqa: E402

CONF = Path(__file__).resolve().parent.parent / "conf" / "model"


def preset(name: str, widths: list[int]) -> dict:
  """A model preset's settings from conf/model/<name>.yaml, with the benchmark's widths."""
  cfg = OmegaConf.load(CONF / f"{name}.yaml")[name]
  cfg = {k: v for k, v in OmegaConf.to_container(cfg).items() if not k.startswith("_")}
  return {**cfg, "widths": list(widths)}


def jax_model(cfg: dict, canvas_size: int, seed: int, object_first: bool = True) -> nnx.Module:
  return ShiftNet(num_classes=10, canvas_size=canvas_size, object_first=object_first, rngs=nnx.Rngs(seed), **cfg)


def torch_model(cfg: dict, canvas_size: int) -> torch.nn.Module:
  net = torch_twin.TorchTwin(num_classes=10, canvas_size=canvas_size, widths=cfg["widths"],
                             kernel_size=cfg["kernel_size"], head=cfg["head"])
  return net.to(memory_format=torch.channels_last)


def train_flops(cfg: dict, canvas_size: int) -> float:
  """FLOPs of one training image: convs and the dense layer, forward + both gradients (no input grad for
  the first conv, whose input is the data). Pooling and elementwise ops are not counted."""
  side, cin, k, total = canvas_size, 1, cfg["kernel_size"], 0.0
  for i, cout in enumerate(cfg["widths"]):
    fwd = 2.0 * side * side * k * k * cin * cout
    total += fwd * (2 if i == 0 else 3)
    side, cin = side // 2, cout
  dense_in = side * side * cin if cfg["head"] == "fc" else cin
  return total + 3 * 2.0 * dense_in * 10


def matmul_peak(n: int = 2048) -> float:
  """GFLOP/s of a large fp32 matmul in JAX, the practical ceiling on this machine."""
  a = jax.random.normal(jax.random.key(0), (n, n))
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  best = 0.0
  for _ in range(5):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
  return best


def interleave(contestants: dict, reps: int) -> dict[str, list[float]]:
  """Runs each contestant's block once per repetition, in turn; each returns its items per second."""
  for run in contestants.values():
    run(warmup=True)
  out = {k: [] for k in contestants}
  for _ in range(reps):
    for name, run in contestants.items():
      out[name].append(run())
  return out


def summary(values: list[float]) -> dict:
  return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}


def ratio(a: list[float], b: list[float]) -> dict:
  return summary(list(np.asarray(a) / np.asarray(b)))


def alternatives(res: dict[str, list[float]], unit: str) -> dict:
  """Every contestant but the two main ones: its rate (under `unit`) and shiftbench's speedup over it."""
  return {k: {unit: summary(v), "speedup": ratio(res["shiftbench"], v)}
          for k, v in res.items() if k not in ("shiftbench", "torch")}


# -- the contestants --------------------------------------------------------------------------------
def jax_trainer(cfg, args, data, spec, dispatch="auto", object_first=True):
  model = jax_model(cfg, args.canvas, 0, object_first)
  tx, placement, state = optax.adam(1e-3), train.Placement("translate", (0, 0)), {"seed": 0}

  def run(warmup=False):
    n = 10 if warmup else args.steps  # 10: compiles the 10-step lax.scan (dispatch="auto")
    state["seed"] += 1
    t = time.perf_counter()
    train.train(model, tx, data, spec, placement, steps=n, batch_size=args.batch, seed=state["seed"],
                dispatch=dispatch, log_every=10**9, desc="bench")
    return n * args.batch / (time.perf_counter() - t)
  return run


def torch_trainer(cfg, args, images, labels, threads):
  net = torch_model(cfg, args.canvas)
  opt = torch.optim.Adam(net.parameters(), 1e-3)
  objs = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
  labs = torch.from_numpy(labels.astype(np.int64))
  gen = torch.Generator().manual_seed(0)
  hi = args.canvas - args.object + 1

  def run(warmup=False):
    torch.set_num_threads(threads)
    n = 3 if warmup else args.steps
    t = time.perf_counter()
    for _ in range(n):  # the same work as the jitted step: draw, place, forward, backward, Adam
      idx = torch.randint(0, len(objs), (args.batch,), generator=gen)
      locs = torch.randint(0, hi, (args.batch, 2), generator=gen)
      x = torch_twin.place(objs[idx].float() / 255.0, locs, args.canvas).contiguous(
          memory_format=torch.channels_last)
      opt.zero_grad(set_to_none=True)
      F.cross_entropy(net(x), labs[idx]).backward()
      opt.step()
    torch.set_num_threads(args.torch_threads)
    return n * args.batch / (time.perf_counter() - t)
  return run


def jax_evaluator(cfg, args, objects, grid, object_first=True):
  model = jax_model(cfg, args.canvas, 0, object_first)

  def run(warmup=False):
    t = time.perf_counter()
    evaluation.predict_grid(model, objects, grid, args.canvas, args.eval_batch)
    return grid.shape[0] * objects.shape[0] / (time.perf_counter() - t)
  return run


def torch_evaluator(cfg, args, images, grid):
  net = torch_model(cfg, args.canvas).eval()
  objs = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
  locs = torch.from_numpy(grid.astype(np.int64))
  per = max(1, args.eval_batch // len(objs))

  @torch.inference_mode()
  def run(warmup=False):
    t = time.perf_counter()
    for i in range(0, len(locs), per):  # chunks of (locations x all objects), like predict_grid
      chunk = locs[i:i + per]
      x = torch_twin.place(objs.repeat(len(chunk), 1, 1, 1), chunk.repeat_interleave(len(objs), 0), args.canvas)
      net(x.contiguous(memory_format=torch.channels_last)).argmax(-1)
    return len(locs) * len(objs) / (time.perf_counter() - t)
  return run


# -- main -------------------------------------------------------------------------------------------
def markdown(r: dict) -> str:
  t = r["torch_threads"]
  lines = [f"| measure | shiftbench | PyTorch ({t} thr) | speedup median [min, max] |", "|---|---|---|---|"]
  fmt = lambda s: f"{s['median']:.2f}x [{s['min']:.2f}, {s['max']:.2f}]"

  def alternative_rows(label: str, unit: str, alts: dict) -> None:
    unit_name = unit.replace("_s", "/s")
    for extra, s in alts.items():
      lines.append(f"| {label}, {extra} ({unit_name}) | {s[unit]['median']:.0f} | | {fmt(s['speedup'])} |")
  for name, m in r["train"].items():
    lines.append(f"| train {name} (img/s) | {m['shiftbench']['median']:.0f} ({m['gflops']:.1f} canvas-equivalent "
                 f"GFLOP/s, {100 * m['peak_fraction']:.1f}% of matmul peak) | {m['torch']['median']:.0f} | "
                 f"{fmt(m['speedup'])} |")
    alternative_rows(f"train {name}", "img_s", m.get("alternatives", {}))
  if "eval" in r:
    e = r["eval"]
    lines.append(f"| location map (canvases/s) | {e['shiftbench']['median']:.0f} | {e['torch']['median']:.0f} | "
                 f"{fmt(e['speedup'])} |")
    alternative_rows("location map", "canvases_s", e.get("alternatives", {}))
  if "e2e" in r:
    e = r["e2e"]
    lines.append(f"| quick row end to end (s) | {1 / e['shiftbench']['median']:.1f} | "
                 f"{1 / e['torch']['median']:.1f} | {fmt(e['speedup'])} |")
  return "\n".join(lines)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--canvas", type=int, default=32)
  p.add_argument("--object", type=int, default=12)
  p.add_argument("--widths", default="8,16,32")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--models", default="cnn_fc,gap")
  p.add_argument("--steps", type=int, default=100, help="training steps per timed block")
  p.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
  p.add_argument("--objects", type=int, default=2000, help="training objects")
  p.add_argument("--eval-objects", type=int, default=500)
  p.add_argument("--grid-stride", type=int, default=5)
  p.add_argument("--eval-batch", type=int, default=512)
  p.add_argument("--e2e-steps", type=int, default=600, help="fine-tune steps of the end-to-end row (0: skip)")
  p.add_argument("--e2e-eval-every", type=int, default=150)
  p.add_argument("--e2e-reps", type=int, default=2)
  p.add_argument("--workers", type=int, default=0, help="PyTorch DataLoader workers in the e2e run")
  p.add_argument("--torch-threads", type=int, default=2)
  p.add_argument("--alternatives", action="store_true",
                 help="also time the first block on the canvas, one step per dispatch and torch at 1 thread")
  p.add_argument("--peak-n", type=int, default=2048, help="side of the fp32 matmul that measures the peak")
  p.add_argument("--out", type=Path)
  args = p.parse_args(argv)
  torch.set_num_threads(args.torch_threads)
  widths = [int(w) for w in args.widths.split(",")]
  spec = canvas.CanvasSpec(args.canvas, args.object)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.objects, args.object, args.object, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, args.objects).astype(np.int32)
  data = train.DeviceObjects.from_numpy(images, labels, 10)
  grid = canvas.location_grid(spec, args.grid_stride, include=spec.center())
  peak = matmul_peak(args.peak_n)
  r = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "argv": sys.argv, "args": vars(args) | {
      "out": str(args.out)}, "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
      "load_avg_start": os.getloadavg(), "jax": jax.__version__, "torch": torch.__version__,
      "backend": jax.default_backend(), "conv": "conv_general_dilated",
      "allocator": os.environ.get("LD_PRELOAD") or "glibc malloc (no LD_PRELOAD), both sides",
      "torch_threads": args.torch_threads, "matmul_peak_gflops": peak, "train": {}}
  for name in args.models.split(","):
    cfg = preset(name, widths)
    if (why := torch_twin.check_supported(cfg)) is not None:
      print(f"skipping {name}: {why}")
      continue
    runs = {"shiftbench": jax_trainer(cfg, args, data, spec),
            "torch": torch_trainer(cfg, args, images, labels, args.torch_threads)}
    if args.alternatives:
      runs["first block on the canvas (object_first=False)"] = jax_trainer(cfg, args, data, spec,
                                                                           object_first=False)
      runs["1 step per dispatch (no lax.scan)"] = jax_trainer(cfg, args, data, spec, dispatch=1)
      runs["torch 1 thr"] = torch_trainer(cfg, args, images, labels, 1)
    res = interleave(runs, args.reps)
    gflops = np.median(res["shiftbench"]) * train_flops(cfg, args.canvas) / 1e9
    r["train"][name] = {"shiftbench": summary(res["shiftbench"]), "torch": summary(res["torch"]),
                        "speedup": ratio(res["shiftbench"], res["torch"]), "gflops": gflops,
                        "peak_fraction": gflops / peak, "flops_per_image": train_flops(cfg, args.canvas),
                        "alternatives": alternatives(res, "img_s")}
    print(name, json.dumps(r["train"][name]), flush=True)
  first = preset(args.models.split(",")[0], widths)
  ev_objs = images[:args.eval_objects]
  runs = {"shiftbench": jax_evaluator(first, args, jnp.asarray(ev_objs), grid),
          "torch": torch_evaluator(first, args, ev_objs, grid)}
  if args.alternatives:
    runs["first block on the canvas (object_first=False)"] = jax_evaluator(first, args, jnp.asarray(ev_objs),
                                                                           grid, object_first=False)
  res = interleave(runs, args.reps)
  r["eval"] = {"shiftbench": summary(res["shiftbench"]), "torch": summary(res["torch"]),
               "speedup": ratio(res["shiftbench"], res["torch"]), "locations": len(grid),
               "objects": len(ev_objs),
               "alternatives": alternatives(res, "canvases_s")}
  print("eval", json.dumps(r["eval"]), flush=True)
  if args.e2e_steps:
    n_curve = max(1, args.eval_objects * 2 // 5)  # the quick preset's 200 curve objects per 500 test objects
    split = lambda a, b: (images[a:b], labels[a:b])
    host = (split(0, args.objects), split(0, n_curve), split(0, args.eval_objects))
    dev = [train.DeviceObjects.from_numpy(*h, 10) for h in host]
    res = interleave({"shiftbench": bench_e2e.jax_e2e(jax_model(first, args.canvas, 0), args, spec, *dev, grid),
                      "torch": bench_e2e.torch_e2e(lambda: torch_model(first, args.canvas), args, host, grid,
                                                   spec.center())}, args.e2e_reps)
    r["e2e"] = {"shiftbench": summary(res["shiftbench"]), "torch": summary(res["torch"]),
                "speedup": ratio(res["shiftbench"], res["torch"]), "unit": "rows per second"}
    print("e2e", json.dumps(r["e2e"]), flush=True)
  r["train_speedup"] = {k: v["speedup"]["median"] for k, v in r["train"].items()}
  r["eval_speedup"] = r["eval"]["speedup"]["median"]
  r["e2e_speedup"] = r["e2e"]["speedup"]["median"] if "e2e" in r else None
  r["load_avg_end"] = os.getloadavg()
  r["markdown"] = markdown(r)
  print("\n" + r["markdown"])
  if args.out:
    args.out.write_text(json.dumps(r, indent=1))
  return r


if __name__ == "__main__":
  main()
