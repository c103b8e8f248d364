"""Writes the golden rows: every number of one tiny fixed run, which tests/test_golden_rows.py pins exactly.

Run it only when a change moves a number on purpose, after raising `PROTOCOL_VERSION`
(shiftbench/rows/comparison.py) and adding that version's line to the changelog in docs/protocol.md:

  PYTHONPATH=. python scripts/golden_rows.py   # writes tests/golden/rows_protocol_<V>.json, removes older ones

The run is the test suite's tiny protocol (tests/conftest.py: its settings, XLA flags and a throwaway cache),
`gap` fully fine-tuned from scratch and after translate pretraining, one rate, seed 0: 2 rows whose programs
are the suite's other tiny runs' but for pretraining, so in the suite it costs a few seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
# The test suite's environment (CPU, its XLA flags, a throwaway cache), set before jax is imported: the
# golden numbers are the ones the test computes.
from conftest import COMPILE_CACHE  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
# The suite's tiny settings (tests/conftest.py `tiny_overrides`, written out: the golden run must not move
# when those do) and the rows: one model, seed 0, one rate.
OVERRIDES = [
  "logger=none",
  "seeds=[0]",
  "compile_cache=true",
  f"paths.compile_cache_dir={COMPILE_CACHE}",  # shared with the suite's other tiny runs: same programs
  "canvas.size=20",
  "canvas.object_size=8",
  "widths=[4,8]",
  "data.pretrain.classes=['0','1','2']",
  "data.pretrain.train_per_class=20",
  "data.pretrain.test_per_class=6",
  "data.finetune.classes=[A,B,C]",
  "data.finetune.train_per_class=20",
  "data.finetune.test_per_class=6",
  "data.pretrain.image_size=16",
  "data.finetune.image_size=16",
  "pretrain.steps=6",
  "pretrain.batch_size=8",
  "finetune.steps=4",
  "finetune.batch_size=8",
  "finetune.eval_every=2",
  "finetune.learning_rates=[1e-2]",
  "eval.grid_stride=6",
  "eval.curve_objects=6",
  "model=gap",
  "pretrain.regimes=[scratch,translate]",
  "finetune.modes=[full]",
  "finetune.scratch_modes=[full]",
]


def path_for(protocol_version: str) -> Path:
  return GOLDEN / f"rows_protocol_{protocol_version}.json"


def numbers(row: dict[str, Any]) -> dict[str, Any]:
  """What a row computed: every field but where and how fast it ran (`schema.PROVENANCE`) and its keys
  (tests/test_golden_keys.py pins those)."""
  from shiftbench.rows import schema

  skip = {*schema.PROVENANCE, "comparison", "comparison_key", "protocol_key"}
  return {k: v for k, v in row.items() if k not in skip}


def run(data_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
  """The tiny fixed run in `out_dir` (its glyphs under `data_dir`): its protocol version, dataset hashes
  and each row's numbers, as the golden file holds them."""
  from hydra import compose, initialize_config_dir

  from shiftbench.infra.files import to_jsonable
  from shiftbench.rows import comparison
  from shiftbench.runs.experiment import run_experiment

  out_dir = Path(out_dir)
  with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
    paths = [f"data.data_dir={data_dir}", f"paths.checkpoint_dir={out_dir / 'ckpt'}"]
    cfg = compose("config", overrides=OVERRIDES + paths)
  record = run_experiment(cfg, out_dir / "run")
  golden = {
    "protocol_version": comparison.PROTOCOL_VERSION,
    "datasets": {k: record["datasets"][k] for k in ("pretrain_sha256", "finetune_sha256")},
    "rows": [numbers(r) for r in record["rows"]],
  }
  return json.loads(json.dumps(to_jsonable(golden)))  # as read back from the file: lists, plain floats


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.parse_args(argv)
  with tempfile.TemporaryDirectory(prefix="shiftbench-golden-") as tmp:
    golden = run(Path(tmp) / "tfds", Path(tmp) / "out")
  path = path_for(golden["protocol_version"])
  GOLDEN.mkdir(parents=True, exist_ok=True)
  for old in GOLDEN.glob("rows_protocol_*.json"):  # one protocol's rows: the current one's
    if old != path:
      old.unlink()
  path.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
  print(f"wrote {path.relative_to(ROOT)}: {len(golden['rows'])} rows of protocol version {golden['protocol_version']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
