"""Markdown table of every model preset in conf/model/: parameter count and forward FLOPs per image.

FLOPs are XLA's own count for the compiled eval-mode forward pass of one image
(`jax.jit(f).lower(x).compile().cost_analysis()`), so they include padding, pooling, blur and APS work.

  python scripts/model_table.py                      # default canvas 32x32x1, 10 classes
  python scripts/model_table.py --canvas 64 --classes 26
  python scripts/model_table.py --canvas 224 --presets vgg11,vgg16,vgg16_bn,resnet18_tv,resnet50,densenet121
The torchvision presets take 1-channel canvases through their input adapter (3 channels into the first conv).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import hydra
import jax
import jax.numpy as jnp
from flax import nnx
from hydra import compose, initialize_config_dir

from shiftbench.models import param_count

CONF = Path(__file__).resolve().parent.parent / "conf"


def forward_flops(model: nnx.Module, canvas: int, channels: int) -> float:
  """XLA's FLOP count for one image through the eval-mode model."""
  model.eval()
  graphdef, state = nnx.split(model)
  x = jnp.zeros((1, canvas, canvas, channels), jnp.float32)
  cost = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v)).lower(state, x).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax returns one dict per device
  return float(cost["flops"])


def rows(
  canvas: int, classes: int, channels: int, presets: list[str] | None = None
) -> list[tuple[str, str, int, float]]:
  names = presets or sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
  out = []
  for name in names:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
      cfg = compose("config", overrides=[f"model={name}"])
    factory = hydra.utils.instantiate(cfg.model[name])
    model = factory(num_classes=classes, canvas_size=canvas, in_channels=channels, rngs=nnx.Rngs(0))
    params = param_count(model)
    target = cfg.model[name]._target_.rsplit(".", 1)[-1]
    out.append((name, target, int(params), forward_flops(model, canvas, channels)))
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--canvas", type=int, default=32)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--channels", type=int, default=1)
  parser.add_argument("--presets", default=None, help="comma-separated presets (default: every one in conf/model)")
  args = parser.parse_args()
  presets = args.presets.split(",") if args.presets else None
  print(
    f"| preset | class | parameters | forward MFLOPs / image ({args.canvas}x{args.canvas}x{args.channels}, "
    f"{args.classes} classes) |"
  )
  print("|---|---|---:|---:|")
  for name, target, params, flops in rows(args.canvas, args.classes, args.channels, presets):
    print(f"| `{name}` | {target} | {params:,} | {flops / 1e6:.2f} |")


if __name__ == "__main__":
  main()
