"""LP-FT's probe budget and rate grid from a pilot on B's validation split (docs/protocol.md, LP-FT).

  PYTHONPATH=. python scripts/lpft_probe_pilot.py --seed 11 --model cnn_fc

Pretrains `model` on A (translate) at the quick sizes with a seed outside the test seeds, then fits
linear probes (the classifier only, from B's fresh classifier) at each rate of `--rates` for the largest
of `--steps`, and prints B's validation in-location accuracy after each of `--steps` (one run per rate,
read along the way: the batches of a shorter budget are the first of a longer one's). Test is never read.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seed", type=int, default=11)
  parser.add_argument("--model", default="cnn_fc")
  parser.add_argument("--rates", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
  parser.add_argument("--steps", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000])
  parser.add_argument("--out", default="outputs/lpft_probe_pilot")
  args = parser.parse_args()

  from shiftbench.data import streams
  from shiftbench.rows.schema import RowId
  from shiftbench.runs import protocol_data
  from shiftbench.runs.protocol import Protocol
  from shiftbench.runs.settings import Settings
  from shiftbench.training import loop

  overrides = ["experiment=quick", "logger=none", f"model={args.model}", f"seeds=[{args.seed}]"]
  overrides += ["pretrain.regimes=[translate]", "finetune.modes=[last]"]
  with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
    s = Settings.from_config(compose("config", overrides=overrides))
  p = Protocol(s, *protocol_data.load_datasets(s), Path(args.out))
  source, _ = p.pretrained(args.model, "translate", args.seed)
  rid = RowId(args.model, "translate", "last", "plain", None, args.rates[0], args.seed)
  table: dict[float, dict[int, float]] = {}
  for rate in args.rates:
    table[rate] = {}
    start = time.perf_counter()

    def on_eval(step, model, row=table[rate]):
      if step in args.steps:
        row[step] = p.validation(p.predictor(model), whole_map=False)[0]

    loop.train(
      p.start(rid, source),
      s.transforms["finetune"].at(rate),
      p.train_b,
      s.spec,
      loop.Placement("fixed", s.finetune_location),
      steps=max(args.steps),
      batch_size=s.finetune.batch_size,
      seed=streams.stream(args.seed, streams.FINETUNE_BATCHES),
      mode="last",
      dispatch=s.finetune.dispatch,
      eval_steps=tuple(args.steps),
      on_eval=on_eval,
      desc=f"probe {rate:g}",
    )
    print(f"rate {rate:g}: {time.perf_counter() - start:.0f} s", flush=True)
  print(f"\n{args.model}, translate, seed {args.seed}: B's validation in-location accuracy of the probe")
  print("| rate | " + " | ".join(str(n) for n in args.steps) + " |")
  print("|---|" + "---|" * len(args.steps))
  for rate, row in table.items():
    print(f"| {rate:g} | " + " | ".join(f"{row[n]:.3f}" for n in args.steps) + " |")


if __name__ == "__main__":
  main()
