#!/usr/bin/env bash
# Adaptive Share-GRPO against Share-GRPO at equal rollout compute (RESULTS.md): adaptive-share
# samples a question's other m-1 variants only when its first variant's n rewards all tie, so it
# samples fewer responses per step; it runs ADAPTIVE_STEPS steps (default 160) so that its total
# sampled responses come close to Share-GRPO's 100 default steps (4 questions x m=2 x n=6 x 100 =
# 4,800). Seeds 1-3 (trainer.seed and data.seed), JOBS runs at a time (default 2) on one thread
# each, then prints the table. SHARE=1 also runs the default Share-GRPO (100 steps) on the same
# seeds.
#
#     [JOBS=2] [SEEDS="1 2 3"] [SHARE=1] scripts/adaptive_share.sh [ADAPTIVE_STEPS] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-160}
OUT=${2:-runs/adaptive}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-1 2 3}
BIN=${CARGO_TARGET_DIR:-target}/release/shareflow
cargo build --release --quiet
mkdir -p "$OUT"
jobs=()
for seed in $SEEDS; do
  jobs+=("adaptive-share adaptive-share $seed $STEPS")
  [ "${SHARE:-0}" = 1 ] && jobs+=("share-grpo share-grpo $seed 100")
done
printf '%s\n' "${jobs[@]}" | xargs -P "$JOBS" -I{} bash -c '
  set -- {}
  name=$1 graph=$2 seed=$3 steps=$4
  RAYON_NUM_THREADS=1 '"$BIN"' train --quiet --graph "$graph" --set trainer.output_dir='"$OUT"' \
    --set trainer.experiment_name="$name-s$seed" --set trainer.seed="$seed" \
    --set data.seed="$seed" --set trainer.total_steps="$steps" --set trainer.val_freq=0 \
    > '"$OUT"'/"$name-s$seed".log 2>&1
'
python3 scripts/adaptive_share.py "$OUT"
