#!/usr/bin/env bash
# N `shiftbench` jobs started 2 s apart on one empty cache, all needing the same pretrained model: the
# case of a sweep's first wave on a cluster (docs/slurm.md). Prints exit codes, how many jobs pretrained,
# waited or restored (from their logs), corrupted-checkpoint warnings, and whether all rows are identical.
# Usage: scripts/concurrent_jobs.sh N [extra Hydra overrides]
set -euo pipefail
N=${1:-3}
shift || true
WORK=$(mktemp -d /tmp/shiftbench-concurrent-XXXX)
export SHIFTBENCH_CACHE=$WORK/cache
cd "$(dirname "$0")/.."
ARGS=(logger=none model=gap 'pretrain.regimes=[translate]' 'finetune.modes=[last]' pretrain.steps=300
      finetune.steps=20 canvas.size=20 canvas.object_size=8 'widths=[4,8]' eval.grid_stride=6
      "data.data_dir=$WORK/data" data.pretrain.train_per_class=50 data.pretrain.test_per_class=10
      data.finetune.train_per_class=20 data.finetune.test_per_class=10 "$@")
start=$(date +%s.%N)
pids=()
for i in $(seq "$N"); do
  python -m shiftbench.cli "${ARGS[@]}" "hydra.run.dir=$WORK/run$i" >"$WORK/run$i.log" 2>&1 &
  pids+=($!)
  sleep 2
done
codes=()
for pid in "${pids[@]}"; do
  if wait "$pid"; then codes+=(0); else codes+=($?); fi
done
echo "jobs: $N in $WORK, wall $(python -c "import time; print(f'{time.time() - $start:.0f}')") s"
echo "exit codes: ${codes[*]}"
echo "pretrained here: $(cat "$WORK"/run*.log | grep -c 'pretrained here in' || true)"
echo "waited for another job: $(cat "$WORK"/run*.log | grep -c 'waited for another job' || true)"
echo "restored (already published): $(cat "$WORK"/run*.log | grep -c ': restored from' || true)"
echo "corrupted warnings: $(cat "$WORK"/run*.log | grep -ci 'corrupted' || true)"
grep -h "shiftbench.training.checkpoints" "$WORK"/run*.log | sed 's/^/  /'
python - "$WORK" "$N" <<'EOF'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
timing = ("eval_seconds", "finetune_seconds")
rows = [[{k: v for k, v in r.items() if k not in timing} for r in json.load(open(f"{work}/run{i}/results.json"))["rows"]]
        for i in range(1, n + 1)]
print("rows identical across jobs:", all(r == rows[0] for r in rows))
EOF
