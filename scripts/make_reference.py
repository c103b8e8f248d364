"""Makes a shipped reference file (`shiftbench/reference/<preset>.json.gz`) from a finished run of the preset.

One command per preset; it runs the preset first (or resumes it) unless `--no-run`, then packs the run:
  python scripts/make_reference.py quick       # shiftbench experiment=quick, ~2-3 min on 2 cores
  python scripts/make_reference.py methods     # 620 rows, ~1 h 10 min
  python scripts/make_reference.py reproduce   # 225 rows, ~20-50 min
  python scripts/make_reference.py reproduce_stop   # 225 rows at the stopping rule, ~1 h
  python scripts/make_reference.py quick --no-run --run-dir outputs/2026-12-07/07-11-52   # pack a finished run

The run goes to `reference_runs/<preset>` (`--run-dir`), with `logger=none`, so an interrupted one resumes.
Each row is checked (its identity complete, its keys those of its settings) and every row must have one
protocol key: rows from mixed protocols are refused. The file records the shiftbench version, the protocol
version, the date, the command and the sha256 of its content (`shiftbench.rows.reference`). After a change
that moves numbers or keys, remake all three and run `pytest tests/test_reference.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from shiftbench.infra.errors import UserError
from shiftbench.rows import reference

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "shiftbench" / "reference"


def command(preset: str) -> list[str]:
  """The overrides a reference run of `preset` is made with (the preset as published, no logger)."""
  return [f"experiment={preset}", "logger=none"]


def run(preset: str, run_dir: Path) -> None:
  """Runs (or resumes) the preset into `run_dir`."""
  args = [sys.executable, "-m", "shiftbench.cli", *command(preset), f"hydra.run.dir={run_dir}"]
  print("running:", " ".join(args[2:]), flush=True)
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
  subprocess.run(args, check=True, cwd=ROOT, env=env)


def finished(run_dir: Path) -> dict:
  """The run's results.json record; a `UserError` unless the run ended (it wrote its leaderboard)."""
  results = run_dir / "results.json"
  if not results.is_file() or not (run_dir / "leaderboard.json").is_file():
    raise UserError(f"{run_dir} holds no finished run (results.json and leaderboard.json): run it to the end first")
  return json.loads(results.read_text())


def overrides(run_dir: Path, preset: str) -> list[str]:
  """The overrides the run was made with (Hydra's record of them, less where it ran), which must be the
  preset's: a `UserError` for a run of another experiment."""
  path = run_dir / ".hydra" / "overrides.yaml"
  if not path.is_file():
    return command(preset)
  import yaml  # Hydra's own dependency

  found = [o for o in yaml.safe_load(path.read_text()) or [] if not o.startswith("hydra.")]
  if f"experiment={preset}" not in found:
    raise UserError(f"{run_dir} ran {' '.join(found) or 'the default config'}, not experiment={preset}")
  return found


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("preset", choices=reference.PRESETS, help="the published preset to make the reference of")
  parser.add_argument("--run-dir", type=Path, help="the preset's run directory (default: reference_runs/<preset>)")
  parser.add_argument("--no-run", action="store_true", help="pack a finished run directory; run nothing")
  parser.add_argument("--out", type=Path, default=OUT, help=f"where to write <preset>.json.gz (default: {OUT})")
  args = parser.parse_args(argv)
  run_dir = (args.run_dir or ROOT / "reference_runs" / args.preset).absolute()
  try:
    if not args.no_run:
      run(args.preset, run_dir)
    record = finished(run_dir)
    if (record.get("config") or {}).get("seeds") is None:
      raise UserError(f"{run_dir}/results.json has no config: not a shiftbench run")
    doc = reference.pack(args.preset, [record], "shiftbench " + " ".join(overrides(run_dir, args.preset)))
    path = args.out / f"{args.preset}{reference.SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(reference.dumps(doc))
    loaded = reference.load(path)  # what users get: it must verify
  except (UserError, subprocess.CalledProcessError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(
    f"wrote {path}: {len(doc['rows'])} rows, protocol {loaded.protocol_key}, {loaded.label}, "
    f"{path.stat().st_size / 1024:.0f} KiB"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
