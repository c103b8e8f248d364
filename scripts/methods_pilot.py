"""The L2-SP beta grid from a pilot run on B's validation split, by the rule in docs/protocol.md.

  shiftbench experiment=methods eval.split=validation seeds=[100,101] 'finetune.modes=[last,full]' \
    'finetune.methods=[plain,lpft,wise,{_target_: shiftbench.methods.L2SP, betas: [0.001,0.01,0.1,1,10,100]}]' \
    hydra.run.dir=pilot
  python scripts/methods_pilot.py pilot

The grid runs from the smallest beta whose mean validation invariance is more than 0.02 above plain full's
for some model and rate, to the smallest beta whose mean validation in-location accuracy is more than 0.02
below plain full's for every model and rate. Prints every number it used.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

from shiftbench.rows import schema
from shiftbench.rows.collect import collect

MARGIN = 0.02


def _mean(rows: list[dict], metric: str) -> float:
  values = [r[metric] for r in rows if schema.defined(r.get(metric))]
  return math.fsum(values) / len(values) if values else math.nan


def beta_grid(rows: list[dict]) -> tuple[list[float], list[str]]:
  """(the grid, the lines of numbers it was chosen from) for pilot `rows` evaluated on validation."""
  if any(r.get("eval_split") != "validation" for r in rows):
    raise SystemExit("error: the pilot must be evaluated on the validation split (eval.split=validation)")
  arms: dict[tuple, list[dict]] = defaultdict(list)
  for r in rows:
    rid = schema.identity(r)
    arms[(rid.model, rid.finetune_lr, rid.finetune, rid.method_label)].append(r)
  groups = sorted({(k[0], k[1]) for k in arms})
  betas = sorted({schema.identity(r).method_setting for r in rows if schema.identity(r).finetune_method == "l2sp"})
  if not groups or not betas:
    raise SystemExit("error: the pilot has no l2sp rows")
  moves, falls, lines = defaultdict(list), defaultdict(list), []
  for model, lr in groups:
    full = arms[(model, lr, "full", schema.PLAIN)]
    acc, inv = _mean(full, "in_acc"), _mean(full, "invariance")
    cells = [f"{model} lr {schema.format_lr(lr)}: plain full {acc:.3f} / {inv:.3f}"]
    for beta in betas:
      rs = arms[(model, lr, "full", f"l2sp{schema.format_lr(beta)}")]
      b_acc, b_inv = _mean(rs, "in_acc"), _mean(rs, "invariance")
      moves[beta].append(b_inv - inv > MARGIN)  # NaN compares False
      falls[beta].append(acc - b_acc > MARGIN)
      cells.append(f"l2sp{schema.format_lr(beta)} {b_acc:.3f} / {b_inv:.3f}")
    lines.append("; ".join(cells))
  low = next((b for b in betas if any(moves[b])), betas[0])
  high = next((b for b in betas if all(falls[b])), betas[-1])
  return [b for b in betas if low <= b <= high], lines


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("paths", nargs="+", type=Path, help="the pilot's results.json or run directory")
  args = parser.parse_args(argv)
  grid, lines = beta_grid(collect([str(p) for p in args.paths]))
  print("mean validation in-location accuracy / invariance:")
  print("\n".join(lines))
  print(f"beta grid: {[float(b) for b in grid]}")


if __name__ == "__main__":
  main()
