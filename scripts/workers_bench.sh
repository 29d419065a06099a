#!/usr/bin/env bash
# 1 vs 2 timely workers (BENCHMARKS.md): the default share-grpo run for STEPS steps (default 8)
# without eval, RAYON_NUM_THREADS=1 so that each worker's stage threads compute on one core each,
# trainer.workers=1 then 2. With 2 workers each samples and scores the old log-probs of its own
# seeds, and each holds a policy replica that computes half of every mini-batch's micro-batches
# (gradients swapped through the dataflow, summed in a fixed order). Prints, per run, the rollout
# phase's wall seconds per step (first rollout span's start to the last one's end, from
# trace.json), sampled responses per second of it, the update's wall seconds per step
# (timing/update_s: loss, backward, gradient exchange, AdamW, snapshot), the whole step's wall,
# the process's peak RSS, and the ratios; the final weights must be byte-identical.
#
#     scripts/workers_bench.sh [STEPS] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-8}
OUT=${2:-runs/workers-bench}
BIN=${CARGO_TARGET_DIR:-target}/release/shareflow
cargo build --release --quiet
rm -rf "$OUT"
mkdir -p "$OUT"
for w in 1 2; do
  RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1} /usr/bin/time -f "%M" -o "$OUT/workers-$w.maxrss" "$BIN" train --quiet --set trainer.output_dir="$OUT" \
    --set trainer.experiment_name="workers-$w" --set trainer.workers="$w" \
    --set trainer.total_steps="$STEPS" --set data.val_size=0 --set trainer.val_freq=0 \
    --set trainer.val_before_train=false > "$OUT/workers-$w.log" 2>&1
done
python3 - "$OUT" <<'PY'
import json, os, sys
from collections import defaultdict
root = sys.argv[1]
res = {}
for w in (1, 2):
    d = os.path.join(root, f"workers-{w}")
    ev = [e for e in json.load(open(os.path.join(d, "trace.json")))["traceEvents"] if e.get("ph") == "X"]
    spans = defaultdict(list)
    for e in ev:
        if e["cat"] == "rollout":
            spans[e["args"]["step"]].append((e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6))
    phase = [max(b for _, b in s) - min(a for a, _ in s) for s in spans.values()]
    m = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
    responses = sum(x["rollout/responses"] for x in m)
    s = json.load(open(os.path.join(d, "summary.json")))
    update = sum(x["timing/update_s"] for x in m) / len(m)
    rss = int(open(os.path.join(root, f"workers-{w}.maxrss")).read().split()[-1]) / 1024
    res[w] = (sum(phase) / len(phase), responses / sum(phase), s["wall_seconds"] / len(m), update, rss)
    print(f"workers {w}: rollout phase {res[w][0]:.2f} s/step, {res[w][1]:.1f} responses/s; "
          f"update {update:.2f} s/step; wall {res[w][2]:.2f} s/step; peak RSS {rss:.0f} MiB")
print(f"2 workers / 1: rollout throughput x{res[2][1] / res[1][1]:.2f}, update x{res[1][3] / res[2][3]:.2f} faster, "
      f"step wall x{res[1][2] / res[2][2]:.2f} faster; the second replica adds {res[2][4] - res[1][4]:.0f} MiB of peak RSS")
a = open(os.path.join(root, "workers-1", "checkpoints", f"step_{len(m)}", "model.safetensors"), "rb").read()
b = open(os.path.join(root, "workers-2", "checkpoints", f"step_{len(m)}", "model.safetensors"), "rb").read()
print("final weights byte-identical:", a == b)
PY
