#!/usr/bin/env bash
# 1 vs 2 timely workers (BENCHMARKS.md): the default share-grpo run for STEPS steps (default 8)
# without eval, RAYON_NUM_THREADS=1 so that each worker's stage threads compute on one core each,
# trainer.workers=1 then 2. With 2 workers each samples and scores the old log-probs of its own
# seeds, and each holds a policy replica that computes half of every mini-batch's micro-batches
# (gradients swapped through the dataflow, summed in a fixed order). Prints, per run, the rollout
# phase's wall seconds per step (first rollout span's start to the last one's end, from
# trace.json), sampled responses per second of it, the update's wall seconds per step
# (timing/update_s: loss, backward, gradient exchange, AdamW, snapshot), the whole step's wall,
# the process's peak RSS, and the ratios; then the same for 2 workers in split placement (worker
# 0 updates, worker 1 samples) and for 2 processes of 1 worker each over TCP on 127.0.0.1 (peak
# RSS of both added). The final weights must be byte-identical.
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
common=(train --quiet --set trainer.output_dir="$OUT" --set trainer.total_steps="$STEPS"
  --set data.val_size=0 --set trainer.val_freq=0 --set trainer.val_before_train=false)
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}
for w in 1 2; do
  /usr/bin/time -f "%M" -o "$OUT/workers-$w.maxrss" "$BIN" "${common[@]}" \
    --set trainer.experiment_name="workers-$w" --set trainer.workers="$w" > "$OUT/workers-$w.log" 2>&1
done
# Split placement: worker 0 only updates, worker 1 samples and scores every seed.
/usr/bin/time -f "%M" -o "$OUT/split-2.maxrss" "$BIN" "${common[@]}" \
  --set trainer.experiment_name=split-2 --set trainer.workers=2 --set trainer.placement=split \
  > "$OUT/split-2.log" 2>&1
# Two processes of one worker each, over TCP on 127.0.0.1 (process 1 writes no run directory).
port=$(( 20000 + RANDOM % 20000 ))
printf '127.0.0.1:%d\n127.0.0.1:%d\n' "$port" "$((port + 1))" > "$OUT/hosts"
/usr/bin/time -f "%M" -o "$OUT/processes-2.p1.maxrss" "$BIN" "${common[@]}" \
  --set trainer.experiment_name=processes-2 --processes 2 --process 1 --hostfile "$OUT/hosts" \
  > "$OUT/processes-2.p1.log" 2>&1 &
/usr/bin/time -f "%M" -o "$OUT/processes-2.maxrss" "$BIN" "${common[@]}" \
  --set trainer.experiment_name=processes-2 --processes 2 --process 0 --hostfile "$OUT/hosts" \
  > "$OUT/processes-2.log" 2>&1
wait
python3 - "$OUT" <<'PY'
import json, os, sys
from collections import defaultdict
root = sys.argv[1]
res = {}
for run in ("workers-1", "workers-2", "split-2", "processes-2"):
    d = os.path.join(root, run)
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
    rss = sum(int(open(os.path.join(root, f)).read().split()[-1]) / 1024
              for f in os.listdir(root) if f.startswith(run + ".") and f.endswith("maxrss"))
    res[run] = (sum(phase) / len(phase), responses / sum(phase), s["wall_seconds"] / len(m), update, rss)
    print(f"{run}: rollout phase {res[run][0]:.2f} s/step, {res[run][1]:.1f} responses/s; "
          f"update {update:.2f} s/step; wall {res[run][2]:.2f} s/step; peak RSS {rss:.0f} MiB"
          + (" (both processes)" if run == "processes-2" else ""))
one = res["workers-1"]
for run in ("workers-2", "split-2", "processes-2"):
    r = res[run]
    print(f"{run} / workers-1: rollout throughput x{r[1] / one[1]:.2f}, update x{one[3] / r[3]:.2f} "
          f"faster, step wall x{one[2] / r[2]:.2f} faster, peak RSS +{r[4] - one[4]:.0f} MiB")
ckpt = lambda run: open(os.path.join(root, run, "checkpoints", f"step_{len(m)}", "model.safetensors"), "rb").read()
print("final weights byte-identical:", ckpt("workers-1") == ckpt("workers-2") == ckpt("split-2") == ckpt("processes-2"))
PY
