#!/usr/bin/env bash
# GPU checks in one script, run from the repository root on a machine with a CUDA GPU, jax[cuda] and a
# CUDA build of PyTorch:  OUT=gpu_check bash scripts/gpu_check.sh
# 1. scripts/bench.py --device cuda at the forgetting geometry (PyTorch twin + torch.compile anchor);
# 2. experiment=forgetting model=gap seeds=[0], timed (results.json is written after every row);
# 3. the quick default run twice: the second reads compiled programs from the persistent compile cache;
# 4. the bench at the quick geometry, if time is left;
# 5. paper scale (docs/paper.md), if time is left: one VGG16 scratch row of experiment=paper with a short
#    budget (training img/s and location-map time at 224 px), and auto's eval batch there;
# 6. scripts/bench.py --preset paper: VGG16 at 224 px vs its PyTorch twin, eager and torch.compile.
# Budget ~9 min on one H200 (BUDGET seconds, default 540); each step is capped by the time left.
# Writes under $OUT: run.log, timings.txt, bench_gpu_forgetting.json, bench_gpu.json,
# forgetting/{results.json,leaderboard.md}, quick/results_run{1,2}.json, bench_gpu_paper.json. Packages
# missing on the machine can be given as wheels in .whl/ (installed into /tmp/site, never into the environment).
set -u
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-540}))
OUT=${OUT:-gpu_check}; mkdir -p "$OUT/forgetting" "$OUT/quick"
LOG="$OUT/run.log"; TIMES="$OUT/timings.txt"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -2 | tee -a "$LOG"
fi
# A cold, private cache (glyphs, checkpoints, compiled programs) so the first run pays every cost once.
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 SHIFTBENCH_CACHE=/tmp/sbcache TQDM_DISABLE=1
RUNS=/tmp/sbruns; rm -rf "$RUNS" "$SHIFTBENCH_CACHE"; mkdir -p "$RUNS"

# step NAME TIMEOUT CMD...: runs CMD under `timeout min(TIMEOUT, time left)`, output appended to run.log,
# wall time and exit status to timings.txt.
step() {
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - $(date +%s)))
  if [ "$left" -lt 20 ]; then echo "$name: skipped, $left s left" | tee -a "$LOG" "$TIMES"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (timeout ${limit}s): $*" | tee -a "$LOG"
  local t0; t0=$(date +%s.%N)
  timeout "$limit" "$@" 2>&1 | tr '\r' '\n' | grep -v -E "it/s\]|img/s\]|step/s\]" | tee -a "$LOG"
  local rc=${PIPESTATUS[0]} t1; t1=$(date +%s.%N)
  printf '%s: %.1f s, rc %s (timeout %s s)\n' "$name" "$(awk "BEGIN{print $t1 - $t0}")" "$rc" "$limit" | tee -a "$TIMES" "$LOG"
}

# Wall time and XLA compile time of one shiftbench run (jax.monitoring durations), printed as TIMING {...}.
cat > /tmp/timed_cli.py <<'PY'
import collections, json, os, signal, sys, time
t0 = time.perf_counter()
signal.signal(signal.SIGTERM, lambda *a: sys.exit(124))  # `timeout`: still print TIMING below
from shiftbench import cli  # first: shiftbench sets its XLA flags before jax loads
import jax
d = collections.defaultdict(float)
jax.monitoring.register_event_duration_secs_listener(lambda e, s, **kw: d.__setitem__(e, d[e] + s))
if __name__ == "__main__":
  try:
    cli.main()
  finally:
    keep = {k: round(v, 2) for k, v in d.items() if any(w in k for w in ("compil", "cache", "lower", "trace"))}
    print("TIMING", json.dumps({"wall_s": round(time.perf_counter() - t0, 1), "durations": keep}), flush=True)
PY

{ nvidia-smi -L; nproc; python3 -c "import sys, jax, jaxlib, flax, optax, torch; print(sys.version); print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda); print(jax.devices()); print(jax.devices()[0].memory_stats())"; } 2>&1 | tee -a "$LOG"

# (a) PyTorch twin vs shiftbench on the GPU, forgetting geometry (64 px, 24-px objects, widths 32-64-128,
# batch 128), with torch.compile(mode="reduce-overhead"); JAX may take half the memory, torch the rest.
step bench_forgetting 120 env XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 python3 scripts/bench.py --device cuda \
  --canvas 64 --object 24 --widths 32,64,128 --batch 128 --steps 100 --reps 3 --e2e-steps 0 \
  --eval-objects 500 --grid-stride 2 --out "$OUT/bench_gpu_forgetting.json"

# (b) The forgetting preset, one model and seed (8 rows, eval.batch_size=auto); results.json is written
# after every row, so a timeout still returns the rows done.
step forgetting 210 python3 /tmp/timed_cli.py experiment=forgetting model=gap 'seeds=[0]' logger=none \
  hydra.run.dir=$RUNS/forgetting
cp $RUNS/forgetting/results.json $RUNS/forgetting/leaderboard.md "$OUT/forgetting/" 2>/dev/null

# (c) The quick default run twice: the second finds the compiled programs in $SHIFTBENCH_CACHE/jax_cache
# (it also finds the glyphs and the pretrained checkpoints the first one made).
step quick_run1 130 python3 /tmp/timed_cli.py logger=none hydra.run.dir=$RUNS/quick1
cp $RUNS/quick1/results.json "$OUT/quick/results_run1.json" 2>/dev/null
du -sh "$SHIFTBENCH_CACHE"/jax_cache 2>&1 | tee -a "$LOG"
step quick_run2 90 python3 /tmp/timed_cli.py logger=none hydra.run.dir=$RUNS/quick2
cp $RUNS/quick2/results.json "$OUT/quick/results_run2.json" 2>/dev/null

# (d) If time is left: the quick geometry (32 px, 12-px objects, widths 8-16-32, batch 64).
step bench_quick 120 env XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 python3 scripts/bench.py --device cuda \
  --steps 100 --reps 3 --e2e-steps 0 --out "$OUT/bench_gpu.json"
# (e) Paper scale: VGG16 at 224 px, 50-px glyphs, one scratch row (200 pretrain-free fine-tune steps at batch
# 32, the preset's 64-location map of 200 objects); results.json records the resolved auto eval batch.
step paper_vgg16 150 python3 /tmp/timed_cli.py experiment=paper model=vgg16 'seeds=[0]' logger=none \
  'pretrain.regimes=[scratch]' finetune.steps=200 finetune.until_accuracy=null finetune.eval_every=0 \
  eval.max_objects=200 data.pretrain.train_per_class=100 data.finetune.train_per_class=100 \
  data.pretrain.test_per_class=20 data.finetune.test_per_class=20 hydra.run.dir=$RUNS/paper
mkdir -p "$OUT/paper"; cp $RUNS/paper/results.json "$OUT/paper/" 2>/dev/null
# (f) Paper-scale bench: VGG16 training steps (batch 32) and a 64-location map of 128 objects at 224 px,
# shiftbench vs the torchvision twin eager and torch.compile(mode="reduce-overhead"), 3 repetitions.
step bench_paper 150 env XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 python3 scripts/bench.py --preset paper --device cuda \
  --out "$OUT/bench_gpu_paper.json"
echo "total $(( $(date +%s) - START )) s" | tee -a "$TIMES" "$LOG"
