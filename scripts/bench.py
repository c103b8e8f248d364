"""shiftbench vs PyTorch on the same network, canvases and optimiser, measured side by side in one run.

  PYTHONPATH=. python scripts/bench.py --out bench.json          # quick geometry: 32px canvas, 12px objects
  PYTHONPATH=. python scripts/bench.py --canvas 64 --object 28 --widths 16,32,64 --batch 128
  PYTHONPATH=. python scripts/bench.py --device cuda --out bench_gpu.json   # both sides on the GPU
  PYTHONPATH=. python scripts/bench.py --preset paper --device cuda --out bench_paper.json  # VGG16, 224 px
  PYTHONPATH=. python scripts/bench.py --preset paper --tv-width 0.0625 --steps 2 --reps 1  # the same on a CPU

`--preset paper` (scripts/bench_paper.py) times torchvision's VGG16 as experiment=paper runs it: 224-px
canvases, 50-px objects, batch 32, Adam 1e-4, training steps and the protocol's location map
(`location_stats`), against the PyTorch twin that the known-answer tests check it against
(scripts/torchvision_twins.py), eager and with torch.compile. `--tv-width` scales both networks' channels.

Three comparisons, each interleaved (shiftbench block, PyTorch block, repeat) after warm-up, so machine
load hits both sides alike; ratios are per repetition, reported as median [min, max]:
  train: img/s of the training step (translate placement, Adam), per model preset with a PyTorch twin;
  eval:  a location map, i.e. forward passes over locations x objects;
  e2e:   the quick protocol reduced to one row (scratch, full fine-tune at one location, the curve maps
         along the way and the final map) vs PyTorch with host-composed canvases in a DataLoader.
Objects are random uint8 images (no dataset download); accuracy is not the point, cost is.

The PyTorch side is the fastest reasonable eager PyTorch: objects on the device as uint8, canvases
composed there by a gather (`torch_twin.place`), fused Adam, channels_last. `--device cuda` runs it on
the GPU (shiftbench runs on JAX's default device, so give it a GPU jaxlib) with `cudnn.benchmark` on,
timed with `torch.cuda.synchronize()`, plus `torch.compile(model, mode="reduce-overhead")` (CUDA graphs),
the anchor a PyTorch user would pick there. On CPU that variant is off unless `--torch-compile on`
(default mode: reduce-overhead means CUDA graphs), and the output says so.

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
import math
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # torch_twin, torchvision_twins (--preset paper)
import bench_e2e  # noqa: E402  (scripts/ siblings)
import bench_paper  # noqa: E402
import torch_twin  # noqa: E402

from shiftbench.data import canvas
from shiftbench.data.device import DeviceObjects
from shiftbench.evaluators import (
  batching,  # noqa: E402
  location_maps,
)
from shiftbench.evaluators.predictor import Predictor  # noqa: E402
from shiftbench.models import ShiftNet  # noqa: E402
from shiftbench.training import loop

CONF = Path(__file__).resolve().parent.parent / "conf" / "model"


def preset(name: str, widths: list[int]) -> dict:
  """A model preset's settings from conf/model/<name>.yaml, with the benchmark's widths."""
  cfg = OmegaConf.load(CONF / f"{name}.yaml")[name]
  cfg = {k: v for k, v in OmegaConf.to_container(cfg).items() if not k.startswith("_")}
  return {**cfg, "widths": list(widths)}


def jax_model(cfg: dict, canvas_size: int, seed: int, object_first: bool = True) -> nnx.Module:
  return ShiftNet(num_classes=10, canvas_size=canvas_size, object_first=object_first, rngs=nnx.Rngs(seed), **cfg)


def torch_model(cfg: dict, canvas_size: int) -> torch.nn.Module:
  net = torch_twin.TorchTwin(
    num_classes=10,
    canvas_size=canvas_size,
    widths=cfg["widths"],
    kernel_size=cfg["kernel_size"],
    head=cfg["head"],
    fc_hidden=cfg.get("fc_hidden") or (),
  )
  return net.to(memory_format=torch.channels_last)


def train_flops(cfg: dict, canvas_size: int) -> float:
  """FLOPs of one training image: convs and the dense layers, forward + both gradients (no input grad for
  the first conv, whose input is the data). Pooling and elementwise ops are not counted."""
  side, cin, k, total = canvas_size, 1, cfg["kernel_size"], 0.0
  for i, cout in enumerate(cfg["widths"]):
    fwd = 2.0 * side * side * k * k * cin * cout
    total += fwd * (2 if i == 0 else 3)
    side, cin = side // 2, cout
  dims = [side * side * cin if cfg["head"] == "fc" else cin, *(cfg.get("fc_hidden") or ()), 10]
  return total + sum(3 * 2.0 * a * b for a, b in zip(dims[:-1], dims[1:]))


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
  """Runs each contestant's block once per repetition, in turn; each returns its items per second.
  An optional contestant (name starting with "torch.compile") that fails its warm-up is dropped, with
  the reason printed: a missing compiler toolchain should not lose the rest of the benchmark."""
  for name, run in list(contestants.items()):
    try:
      run(warmup=True)
    except Exception as e:  # noqa: BLE001
      if not name.startswith("torch.compile"):
        raise
      print(f"{name} dropped: its warm-up failed with {type(e).__name__}: {str(e)[:300]}", flush=True)
      del contestants[name]
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
  return {
    k: {unit: summary(v), "speedup": ratio(res["shiftbench"], v)}
    for k, v in res.items()
    if k not in ("shiftbench", "torch")
  }


# -- the contestants --------------------------------------------------------------------------------
def jax_trainer(model, args, data, spec, dispatch="auto"):
  tx, placement, state = optax.adam(args.lr), loop.Placement("translate", (0, 0)), {"seed": 0}

  def run(warmup=False):
    n = loop.steps_per_dispatch(dispatch) if warmup else args.steps  # compiles the scan of that many steps
    state["seed"] += 1
    t = time.perf_counter()
    loop.train(
      model,
      tx,
      data,
      spec,
      placement,
      steps=n,
      batch_size=args.batch,
      seed=state["seed"],
      dispatch=dispatch,
      log_every=10**9,
      desc="bench",
    )
    return n * args.batch / (time.perf_counter() - t)

  return run


def adam(params, device: torch.device, fused: bool = True, lr: float = 1e-3) -> torch.optim.Optimizer:
  """Adam with one fused kernel per step (CUDA, and CPU in recent PyTorch), else the multi-tensor one."""
  if not fused:
    return torch.optim.Adam(params, lr)
  try:
    return torch.optim.Adam(params, lr, fused=True)
  except (RuntimeError, ValueError):  # fused not available for this device or build
    return torch.optim.Adam(params, lr, foreach=True)


def sync(device: torch.device) -> None:
  if device.type == "cuda":
    torch.cuda.synchronize(device)


def torch_trainer(build, args, images, labels, threads, compile_mode: str | None = None, scatter: bool = False):
  """PyTorch's training step: draw, place, forward, backward, Adam. `build()` makes the network;
  `compile_mode`: torch.compile it in that mode. `scatter`: the twin before (indexed-assignment placement,
  default Adam)."""
  dev = torch.device(args.device)
  net = build().to(dev)
  model = net if compile_mode is None else torch.compile(net, mode=compile_mode)
  opt = adam(net.parameters(), dev, fused=not scatter, lr=args.lr)
  objs = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(dev)
  padded = torch_twin.pad_objects(objs)
  labs = torch.from_numpy(labels.astype(np.int64)).to(dev)
  gen = torch.Generator(device=dev).manual_seed(0)
  hi = args.canvas - args.object + 1

  def run(warmup=False):
    torch.set_num_threads(threads)
    n = (10 if compile_mode else 3) if warmup else args.steps  # compile + CUDA-graph recording in warm-up
    sync(dev)
    t = time.perf_counter()
    for _ in range(n):  # the same work as the jitted step: draw, place, forward, backward, Adam
      idx = torch.randint(0, len(objs), (args.batch,), generator=gen, device=dev)
      locs = torch.randint(0, hi, (args.batch, 2), generator=gen, device=dev)
      if scatter:
        x = torch_twin.place_scatter(objs[idx].float() / 255.0, locs, args.canvas).contiguous(
          memory_format=torch.channels_last
        )
      else:
        x = torch_twin.place(padded[idx], locs, args.canvas).float() / 255.0  # channels_last already
      opt.zero_grad(set_to_none=True)
      F.cross_entropy(model(x), labs[idx]).backward()
      opt.step()
    sync(dev)
    torch.set_num_threads(args.torch_threads)
    return n * args.batch / (time.perf_counter() - t)

  return run


def jax_evaluator(model, args, objects, grid, labels=None):
  """A location map: predicted classes (`predict_grid`), or with `labels` the protocol's reduced map
  (`location_stats`: per-location correct counts, computed on the device)."""

  def run(warmup=False):
    t = time.perf_counter()
    predictor = Predictor(model, args.canvas)
    if labels is None:
      location_maps.predict_grid(predictor, objects, grid, args.eval_batch)
    else:
      location_maps.location_stats(predictor, objects, labels, grid, args.eval_batch).accuracy()
    return grid.shape[0] * objects.shape[0] / (time.perf_counter() - t)

  return run


def torch_evaluator(build, args, images, grid, labels=None, compile_mode: str | None = None):
  """The same map in PyTorch: argmax per canvas, or with `labels` correct counts per location on the device."""
  dev = torch.device(args.device)
  net = build().to(dev).eval()
  model = net if compile_mode is None else torch.compile(net, mode=compile_mode)
  padded = torch_twin.pad_objects(torch.from_numpy(images).permute(0, 3, 1, 2).to(dev))
  labs = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64)).to(dev)
  locs = torch.from_numpy(grid.astype(np.int64)).to(dev)
  per = max(1, args.eval_batch // len(padded))

  @torch.inference_mode()
  def run(warmup=False):
    sync(dev)
    t = time.perf_counter()
    counts = []
    for i in range(0, len(locs), per):  # chunks of (locations x all objects), like predict_grid
      chunk = locs[i : i + per]
      x = torch_twin.place(padded.repeat(len(chunk), 1, 1, 1), chunk.repeat_interleave(len(padded), 0), args.canvas)
      predicted = model(x.float() / 255.0).argmax(-1)
      if labs is not None:
        counts.append((predicted.view(len(chunk), -1) == labs).sum(1))
    if counts:
      torch.cat(counts).cpu()  # the per-location counts leave the device, as location_stats' do
    sync(dev)
    return len(locs) * len(padded) / (time.perf_counter() - t)

  return run


def train_entry(res: dict[str, list[float]], flops_per_image: float, peak: float) -> dict:
  """One model's training figures: both sides' img/s, the speedup, GFLOP/s and every alternative."""
  gflops = np.median(res["shiftbench"]) * flops_per_image / 1e9
  return {
    "shiftbench": summary(res["shiftbench"]),
    "torch": summary(res["torch"]),
    "speedup": ratio(res["shiftbench"], res["torch"]),
    "gflops": gflops,
    "peak_fraction": gflops / peak,
    "flops_per_image": flops_per_image,
    "alternatives": alternatives(res, "img_s"),
  }


def eval_entry(res: dict[str, list[float]], grid: np.ndarray, objects: np.ndarray) -> dict:
  return {
    "shiftbench": summary(res["shiftbench"]),
    "torch": summary(res["torch"]),
    "speedup": ratio(res["shiftbench"], res["torch"]),
    "locations": len(grid),
    "objects": len(objects),
    "alternatives": alternatives(res, "canvases_s"),
  }


def paper(args, r: dict, data, spec, images, labels, grid, peak: float) -> None:
  """`--preset paper`: VGG16 training steps and the protocol's location map (`location_stats`) against
  the PyTorch twin of torchvision's VGG16, eager and (where `args.compile_mode`) torch.compile."""
  name = bench_paper.ARCH if args.tv_width == 1 else f"{bench_paper.ARCH} (width {args.tv_width:g})"
  build = lambda: bench_paper.torch_vgg(args.tv_width)
  dispatch = math.gcd(10, args.steps)  # the warm-up compiles the scan that the timed blocks run
  runs = {
    "shiftbench": jax_trainer(bench_paper.jax_vgg(args.tv_width, args.canvas), args, data, spec, dispatch),
    "torch": torch_trainer(build, args, images, labels, args.torch_threads),
  }
  if args.compile_mode:
    runs[f"torch.compile (mode={args.compile_mode})"] = torch_trainer(
      build, args, images, labels, args.torch_threads, compile_mode=args.compile_mode
    )
  on_canvas = lambda: bench_paper.jax_vgg(args.tv_width, args.canvas, object_first=False)
  if args.alternatives:
    runs["first stages on the canvas (object_first=False)"] = jax_trainer(on_canvas(), args, data, spec, dispatch)
  r["train"][name] = train_entry(interleave(runs, args.reps), bench_paper.train_flops(args.tv_width, args.canvas), peak)
  print(name, json.dumps(r["train"][name]), flush=True)
  ev_objs, ev_labels = images[: args.eval_objects], labels[: args.eval_objects]
  runs = {
    "shiftbench": jax_evaluator(
      bench_paper.jax_vgg(args.tv_width, args.canvas), args, jnp.asarray(ev_objs), grid, jnp.asarray(ev_labels)
    ),
    "torch": torch_evaluator(build, args, ev_objs, grid, ev_labels),
  }
  if args.compile_mode:
    runs[f"torch.compile (mode={args.compile_mode})"] = torch_evaluator(
      build, args, ev_objs, grid, ev_labels, compile_mode=args.compile_mode
    )
  if args.alternatives:
    runs["first stages on the canvas (object_first=False)"] = jax_evaluator(
      on_canvas(), args, jnp.asarray(ev_objs), grid, jnp.asarray(ev_labels)
    )
  r["eval"] = eval_entry(interleave(runs, args.reps), grid, ev_objs)
  r["paper"] = {"arch": bench_paper.ARCH, "tv_width": args.tv_width, "dispatch": dispatch, "lr": args.lr}
  print("eval", json.dumps(r["eval"]), flush=True)


# -- main -------------------------------------------------------------------------------------------
def markdown(r: dict) -> str:
  side = f"{r['torch_threads']} thr" if r["device"] == "cpu" else r["device"]
  lines = [f"| measure | shiftbench | PyTorch ({side}) | speedup median [min, max] |", "|---|---|---|---|"]
  fmt = lambda s: f"{s['median']:.2f}x [{s['min']:.2f}, {s['max']:.2f}]"

  def alternative_rows(label: str, unit: str, alts: dict) -> None:
    unit_name = unit.replace("_s", "/s")
    for extra, s in alts.items():
      lines.append(f"| {label}, {extra} ({unit_name}) | {s[unit]['median']:.0f} | | {fmt(s['speedup'])} |")

  for name, m in r["train"].items():
    lines.append(
      f"| train {name} (img/s) | {m['shiftbench']['median']:.0f} ({m['gflops']:.1f} canvas-equivalent "
      f"GFLOP/s, {100 * m['peak_fraction']:.1f}% of matmul peak) | {m['torch']['median']:.0f} | "
      f"{fmt(m['speedup'])} |"
    )
    alternative_rows(f"train {name}", "img_s", m.get("alternatives", {}))
  if "eval" in r:
    e = r["eval"]
    lines.append(
      f"| location map (canvases/s) | {e['shiftbench']['median']:.0f} | {e['torch']['median']:.0f} | "
      f"{fmt(e['speedup'])} |"
    )
    alternative_rows("location map", "canvases_s", e.get("alternatives", {}))
  if "e2e" in r:
    e = r["e2e"]
    lines.append(
      f"| quick row end to end (s) | {1 / e['shiftbench']['median']:.1f} | "
      f"{1 / e['torch']['median']:.1f} | {fmt(e['speedup'])} |"
    )
  return "\n".join(lines)


def setup_device(args) -> list[str]:
  """Checks the device, switches on what PyTorch users switch on there, and says what was chosen."""
  notes = []
  if args.device == "cuda":
    if not torch.cuda.is_available():
      raise SystemExit(
        f"--device cuda: PyTorch {torch.__version__} sees no CUDA device (built for CUDA "
        f"{torch.version.cuda or 'none'}); install a CUDA build of torch and run on a GPU machine"
      )
    torch.backends.cudnn.benchmark = True
    notes.append(f"torch on {torch.cuda.get_device_name()}, cudnn.benchmark on, timed with cuda.synchronize")
    if jax.default_backend() == "cpu":
      notes.append("WARNING: JAX runs on CPU here (no GPU jaxlib): the ratios compare a CPU with a GPU")
  mode = {"cpu": "default", "cuda": "reduce-overhead"}[args.device]
  if args.torch_compile == "off" or (args.torch_compile == "auto" and args.device == "cpu"):
    args.compile_mode = None
    notes.append(
      "torch.compile not timed"
      + (
        " (on CPU by default: mode reduce-overhead means CUDA graphs, GPU only; --torch-compile on times default mode)"
        if args.device == "cpu"
        else ""
      )
    )
  else:
    args.compile_mode = mode
    if args.device == "cpu":
      notes.append("torch.compile in default mode on CPU (reduce-overhead means CUDA graphs, GPU only)")
  for n in notes:
    print(n, flush=True)
  return notes


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument(
    "--preset",
    choices=("default", "paper"),
    default="default",
    help="paper: VGG16 at 224 px, 50-px objects, batch 32, Adam 1e-4 (scripts/bench_paper.py; flags still win)",
  )
  p.add_argument("--tv-width", type=float, default=1.0, help="paper: channel multiplier of VGG16 on both sides")
  p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate on both sides")
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
  p.add_argument(
    "--eval-batch",
    type=int,
    default=None,
    help="canvases per forward pass in the maps (default: eval.batch_size=auto's choice)",
  )
  p.add_argument("--e2e-steps", type=int, default=600, help="fine-tune steps of the end-to-end row (0: skip)")
  p.add_argument("--e2e-eval-every", type=int, default=150)
  p.add_argument("--e2e-reps", type=int, default=2)
  p.add_argument("--workers", type=int, default=0, help="PyTorch DataLoader workers in the e2e run")
  p.add_argument("--torch-threads", type=int, default=2)
  p.add_argument(
    "--alternatives",
    action="store_true",
    help="also time the first block on the canvas, one step per dispatch and torch at 1 thread",
  )
  p.add_argument("--peak-n", type=int, default=2048, help="side of the fp32 matmul that measures the peak")
  p.add_argument(
    "--device",
    choices=("cpu", "cuda"),
    default="cpu",
    help="where PyTorch runs; shiftbench runs on JAX's default device (cuda: give it a GPU jaxlib)",
  )
  p.add_argument(
    "--torch-compile",
    choices=("auto", "on", "off"),
    default="auto",
    help="also time torch.compile(model): auto = on for cuda (mode reduce-overhead), off on CPU",
  )
  p.add_argument("--out", type=Path)
  if p.parse_known_args(argv)[0].preset == "paper":
    p.set_defaults(**bench_paper.DEFAULTS)
  args = p.parse_args(argv)
  notes = setup_device(args)
  torch.set_num_threads(args.torch_threads)
  widths = [int(w) for w in args.widths.split(",")]
  spec = canvas.CanvasSpec(args.canvas, args.object)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.objects, args.object, args.object, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, args.objects).astype(np.int32)
  data = DeviceObjects.from_numpy(images, labels, 10)
  grid = canvas.location_grid(spec, args.grid_stride, include=spec.center())
  if args.eval_batch is None and args.preset == "paper":  # VGG's own activation count, as experiment=paper sizes it
    vgg = nnx.eval_shape(lambda: bench_paper.jax_vgg(args.tv_width, args.canvas))
    per_canvas = batching.model_activation_bytes(vgg, args.canvas, 1)
    args.eval_batch = batching.auto_batch_size(args.canvas, [], per_canvas_bytes=per_canvas)
  if args.eval_batch is None:
    args.eval_batch = batching.auto_batch_size(args.canvas, [widths])
  peak = matmul_peak(args.peak_n)
  r = {
    "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "argv": sys.argv,
    "args": vars(args) | {"out": str(args.out)},
    "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
    "load_avg_start": os.getloadavg(),
    "jax": jax.__version__,
    "torch": torch.__version__,
    "backend": jax.default_backend(),
    "jax_devices": [str(d) for d in jax.devices()],
    "device": args.device,
    "notes": notes,
    "conv": "conv_general_dilated",
    "allocator": os.environ.get("LD_PRELOAD") or "glibc malloc (no LD_PRELOAD), both sides",
    "torch_threads": args.torch_threads,
    "matmul_peak_gflops": peak,
    "train": {},
  }
  if args.preset == "paper":
    paper(args, r, data, spec, images, labels, grid, peak)
  for name in args.models.split(",") if args.preset == "default" else ():
    cfg = preset(name, widths)
    if (why := torch_twin.check_supported(cfg)) is not None:
      print(f"skipping {name}: {why}")
      continue
    build = lambda cfg=cfg: torch_model(cfg, args.canvas)
    runs = {
      "shiftbench": jax_trainer(jax_model(cfg, args.canvas, 0), args, data, spec),
      "torch": torch_trainer(build, args, images, labels, args.torch_threads),
    }
    if args.compile_mode:
      runs[f"torch.compile (mode={args.compile_mode})"] = torch_trainer(
        build, args, images, labels, args.torch_threads, compile_mode=args.compile_mode
      )
    if args.alternatives:
      on_canvas = jax_model(cfg, args.canvas, 0, object_first=False)
      runs["first block on the canvas (object_first=False)"] = jax_trainer(on_canvas, args, data, spec)
      runs["1 step per dispatch (no lax.scan)"] = jax_trainer(jax_model(cfg, args.canvas, 0), args, data, spec, 1)
      runs["torch, scatter placement + default Adam (the twin before)"] = torch_trainer(
        build, args, images, labels, args.torch_threads, scatter=True
      )
      if args.device == "cpu":
        runs["torch 1 thr"] = torch_trainer(build, args, images, labels, 1)
    r["train"][name] = train_entry(interleave(runs, args.reps), train_flops(cfg, args.canvas), peak)
    print(name, json.dumps(r["train"][name]), flush=True)
  if args.preset == "default":
    first = preset(args.models.split(",")[0], widths)
    build = lambda: torch_model(first, args.canvas)
    ev_objs = images[: args.eval_objects]
    ev_dev = jnp.asarray(ev_objs)
    runs = {
      "shiftbench": jax_evaluator(jax_model(first, args.canvas, 0), args, ev_dev, grid),
      "torch": torch_evaluator(build, args, ev_objs, grid),
    }
    if args.alternatives:
      on_canvas = jax_model(first, args.canvas, 0, object_first=False)
      runs["first block on the canvas (object_first=False)"] = jax_evaluator(on_canvas, args, ev_dev, grid)
    r["eval"] = eval_entry(interleave(runs, args.reps), grid, ev_objs)
    print("eval", json.dumps(r["eval"]), flush=True)
  if args.e2e_steps and args.device != "cpu":
    print("e2e skipped: it compares against host-composed canvases in a DataLoader, a CPU comparison")
  elif args.e2e_steps:
    n_curve = max(1, args.eval_objects * 2 // 5)  # the quick preset's 200 curve objects per 500 test objects
    split = lambda a, b: (images[a:b], labels[a:b])
    host = (split(0, args.objects), split(0, n_curve), split(0, args.eval_objects))
    dev = [DeviceObjects.from_numpy(*h, 10) for h in host]
    res = interleave(
      {
        "shiftbench": bench_e2e.jax_e2e(jax_model(first, args.canvas, 0), args, spec, *dev, grid),
        "torch": bench_e2e.torch_e2e(lambda: torch_model(first, args.canvas), args, host, grid, spec.center()),
      },
      args.e2e_reps,
    )
    r["e2e"] = {
      "shiftbench": summary(res["shiftbench"]),
      "torch": summary(res["torch"]),
      "speedup": ratio(res["shiftbench"], res["torch"]),
      "unit": "rows per second",
    }
    print("e2e", json.dumps(r["e2e"]), flush=True)
  r["train_speedup"] = {k: v["speedup"]["median"] for k, v in r["train"].items()}
  compiled = lambda m: [s["speedup"]["median"] for a, s in m["alternatives"].items() if a.startswith("torch.compile")]
  r["train_speedup_compiled"] = {k: c[0] for k, v in r["train"].items() if (c := compiled(v))}
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
