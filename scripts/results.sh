#!/usr/bin/env bash
# Reproduces the runs of RESULTS.md: 3 seeds each of Share-GRPO (m=2, n=6), GRPO (n=12, the same
# number of generated responses per step) and Share-GRPO with global-only advantages, STEPS steps
# each, JOBS runs at a time (default 2) on one thread each; then prints the table. Seed S sets
# both trainer.seed and data.seed, so the seeds also differ in the order of the questions.
#
#     [JOBS=2] [SEEDS="1 2 3"] scripts/results.sh [STEPS] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-100}
OUT=${2:-runs/results}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-1 2 3}
BIN=${CARGO_TARGET_DIR:-target}/release/shareflow
cargo build --release --quiet
mkdir -p "$OUT"
jobs=()
for seed in $SEEDS; do
  jobs+=("share-grpo share-grpo $seed" "grpo grpo $seed" "share-grpo-global-only share-grpo $seed algorithm.local_advantage=false")
done
printf '%s\n' "${jobs[@]}" | xargs -P "$JOBS" -I{} bash -c '
  set -- {}
  name=$1 graph=$2 seed=$3 extra=${4:-}
  args=(train --quiet --graph "$graph" --set trainer.output_dir='"$OUT"'
        --set trainer.experiment_name="$name-s$seed" --set trainer.seed="$seed"
        --set data.seed="$seed"
        --set trainer.total_steps='"$STEPS"' --set trainer.val_freq=0)
  [ -n "$extra" ] && args+=(--set "$extra")
  RAYON_NUM_THREADS=1 '"$BIN"' "${args[@]}" > '"$OUT"'/"$name-s$seed".log 2>&1
'
python3 scripts/results.py "$OUT"
