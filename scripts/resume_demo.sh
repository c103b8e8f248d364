#!/usr/bin/env bash
# Preemption in the middle of pretraining, without SLURM: a run is killed (SIGKILL) right after the
# periodic checkpoint at step KILL_AFTER, and started again; it resumes from that checkpoint. Prints the
# step it resumed from, both pretraining times next to an uninterrupted run's, and whether the rows match.
# Usage: scripts/resume_demo.sh [STEPS=1500] [EVERY=250] [KILL_AFTER=1250] [extra Hydra overrides]
set -euo pipefail
STEPS=${1:-1500}
EVERY=${2:-250}
KILL_AFTER=${3:-1250}
shift 3 || shift $#
WORK=$(mktemp -d /tmp/shiftbench-resume-XXXX)
cd "$(dirname "$0")/.."
ARGS=(logger=none model=gap 'pretrain.regimes=[translate]' 'finetune.modes=[last]' "pretrain.steps=$STEPS"
      "pretrain.checkpoint_every=$EVERY" finetune.steps=20 eval.grid_stride=4 "data.data_dir=$WORK/data" "$@")
run() {  # run NAME: one shiftbench run with its own cache
  SHIFTBENCH_CACHE=$WORK/cache_$1 python -m shiftbench.cli "${ARGS[@]}" "hydra.run.dir=$WORK/$1" >>"$WORK/$1.log" 2>&1
}
pretrained_seconds() { grep -ho 'pretrained here in [0-9.]* s' "$WORK/$1.log" | grep -o '[0-9.]*' | tail -1; }

run plain
SHIFTBENCH_CACHE=$WORK/cache_resumed python -m shiftbench.cli "${ARGS[@]}" "hydra.run.dir=$WORK/resumed" \
  >"$WORK/resumed.log" 2>&1 &
pid=$!
until compgen -G "$WORK/cache_resumed/checkpoints/.*.resume/$KILL_AFTER" >/dev/null; do
  kill -0 $pid 2>/dev/null || { echo "the run ended before step $KILL_AFTER" >&2; exit 1; }
  sleep 0.05
done
kill -9 $pid
wait $pid 2>/dev/null || true
echo "killed at step >= $KILL_AFTER (pid $pid)"
run resumed
echo "resumed: $(grep -ho 'resumed from step [0-9]* of [0-9]*' "$WORK/resumed.log")"
echo "pretraining: uninterrupted $(pretrained_seconds plain) s, resumed run $(pretrained_seconds resumed) s"
python - "$WORK" <<'EOF'
import json, sys
timing = ("eval_seconds", "finetune_seconds")
rows = [[{k: v for k, v in r.items() if k not in timing} for r in json.load(open(f"{sys.argv[1]}/{n}/results.json"))["rows"]]
        for n in ("plain", "resumed")]
print("rows identical to the uninterrupted run:", rows[0] == rows[1])
EOF
