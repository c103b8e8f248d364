#!/usr/bin/env bash
# The forgetting protocol over every model and 3 seeds on SLURM: one job per model x seed.
# Usage: scripts/sweep_slurm.sh [extra Hydra overrides, e.g. hydra.launcher.partition=gpu]
# Pretrained checkpoints are shared through $SHIFTBENCH_CACHE (put it on a filesystem every node sees).
set -euo pipefail
: "${SHIFTBENCH_CACHE:=$HOME/.cache/shiftbench}"
export SHIFTBENCH_CACHE XLA_PYTHON_CLIENT_PREALLOCATE=false
shiftbench -m hydra/launcher=slurm experiment=forgetting model=cnn_fc,fcn,gap,blurpool 'seeds=[0],[1],[2]' "$@"
echo "when the jobs finish: shiftbench-leaderboard multirun/ --out leaderboard/"
