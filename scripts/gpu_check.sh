#!/usr/bin/env bash
# The GPU check, in one go, on a machine with one NVIDIA GPU, PyTorch (CUDA 13) and transformers,
# and no cargo and no network. Build its binaries first, where cargo is:
#
#     scripts/build_gpu_check.sh     # -> target/gpu-check/ + target/gpu-check.tar.xz (36 MB: carry it)
#     scripts/gpu_check.sh [--out FILE]             # on the GPU machine, from the repository root
#
# Dry run on a CPU-only machine (everything that does not need CUDA, on the tiny fixtures):
#
#     scripts/build_gpu_check.sh --cpu && scripts/gpu_check.sh --dry-run
#
# Steps (each under its own time limit, and all under one budget of 540 s, GPU_CHECK_BUDGET_S):
#   1. parity: the policy parity tests (tiny Qwen2 / Qwen2.5-VL / Qwen3 / Qwen3-VL fixtures against
#      transformers' goldens) on the GPU: f32 at the CPU tolerances (log-probs 1e-4 absolute,
#      gradients 1e-3 of each tensor's largest), bf16 at bf16's (as close to the f32 goldens as
#      transformers' own bf16, twice its error + 0.02 nats; gradient cosine >= 0.97).
#   2. a Qwen2.5-VL-3B-shaped checkpoint with random weights (scripts/gpu_shaped_checkpoint.py).
#   3. PyTorch eager + HF generate on it (tests/golden/policy/bench_torch.py, bf16, eager).
#   4. shareflow on it (benches/policy.rs, bf16 over f32 master weights): the same workload:
#      rollout of 24 prompts x 64 tokens, one training step of 48 rows of ~100 tokens.
#   5. `shareflow train` on the embedded task for 3 steps on the GPU.
# Every figure goes into one JSON file (default gpu_check.json, or $OUT/gpu_check.json when the
# device tool's $OUT is set); the log beside it. Exit status 0 only if every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
dry=0
out_file="${OUT:+$OUT/}gpu_check.json"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --out)
            [[ $# -ge 2 ]] || { echo "gpu_check.sh: --out needs a file" >&2; exit 2; }
            out_file="$2"; shift ;;
        *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [[ $dry == 1 ]]; then
    bin=target/gpu-check-cpu; device=cpu; dtype=f32; torch_device=cpu; torch_dtype=float32
else
    bin=target/gpu-check; device=cuda; dtype=bf16; torch_device=cuda; torch_dtype=bfloat16
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/shareflow-gpu-check.XXXXXX")"
log="${out_file%.json}.log"
: > "$log"
results="$work/results.jsonl"
: > "$results"
python="${PYTHON:-python3}"
say() { echo "[gpu_check $(date +%T)] $*" | tee -a "$log" >&2; }
record() { # name status seconds json-or-null
    "$python" - "$@" >> "$results" <<'EOF'
import json, sys
name, status, secs, payload = sys.argv[1:5]
try:
    payload = json.loads(payload)
except Exception:
    payload = payload[-4000:]
print(json.dumps({"step": name, "status": status, "seconds": float(secs), "result": payload}))
EOF
}
write_out() { # the figures so far, as one JSON file; `write_out final` also prints a summary
"$python" - "$results" "$out_file" "${1:-}" <<'EOF'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1])]
by = {s["step"]: s for s in steps}
def get(step, *path):
    x = by.get(step, {}).get("result")
    for p in path:
        x = x.get(p) if isinstance(x, dict) else None
    return x
ratios = {}
t_roll, s_roll = get("torch_eager", "rollout", "generated_tokens_per_s"), get("shareflow_bench", "rollout_tokens_per_s")
if t_roll and s_roll:
    ratios["rollout_tokens_per_s_shareflow_over_transformers"] = round(s_roll / t_roll, 3)
t_step, s_step = get("torch_eager", "train_step", "median_seconds_per_step"), get("shareflow_bench", "train_step_s_micro48")
if t_step and s_step:
    ratios["train_step_speedup_shareflow_over_pytorch"] = round(t_step / s_step, 3)
doc = {"all_passed": all(s["status"] == "passed" for s in steps), "ratios": ratios, "steps": steps}
json.dump(doc, open(sys.argv[2], "w"), indent=1)
if sys.argv[3] == "final":
    print(json.dumps({"all_passed": doc["all_passed"], "ratios": ratios,
                      "statuses": {s["step"]: s["status"] for s in steps}}, indent=1))
EOF
}
whole_json() { # step: its result is all of its stdout (a pretty-printed JSON document)
"$python" - "$work/$1.out" "$results" "$1" <<'EOF' || true
import json, sys
try:
    doc = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(0)
lines = [json.loads(l) for l in open(sys.argv[2])]
for l in lines:
    if l["step"] == sys.argv[3]:
        l["result"] = doc
open(sys.argv[2], "w").write("".join(json.dumps(l) + "\n" for l in lines))
EOF
write_out
}
# One deadline for the whole check (the device tool allows 600 s a command): each step gets at
# most its own limit and what is left before the deadline, and the figures file is rewritten
# after every step, so a check cut short still leaves what it measured.
deadline=$((SECONDS + ${GPU_CHECK_BUDGET_S:-540}))
run_step() { # name timeout command...
    local name="$1" limit="$2"; shift 2
    local left=$((deadline - SECONDS - 15))
    if (( left < 5 )); then
        say "== $name: skipped, the check's time budget is spent"
        record "$name" "skipped (time budget)" 0 null
        write_out
        return 1
    fi
    (( limit > left )) && limit=$left
    say "== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --kill-after=5 "$limit" "$@" > "$work/$name.out" 2> "$work/$name.err"
    local rc=$?
    cat "$work/$name.out" "$work/$name.err" >> "$log"
    local status=passed
    [[ $rc == 124 || $rc == 137 ]] && status="timed out"
    [[ $rc != 0 && $status == passed ]] && status="failed (exit $rc)"
    say "   $name: $status in $((SECONDS - t0)) s"
    local payload
    payload="$(tail -n 1 "$work/$name.out" 2>/dev/null)"
    [[ -z "$payload" || "${payload:0:1}" != "{" ]] && payload="$(tail -c 3000 "$work/$name.err")"
    record "$name" "$status" "$((SECONDS - t0))" "$payload"
    write_out
    [[ $status == passed ]]
}

if [[ ! -d "$bin" && -f "$bin.tar.xz" ]]; then
    say "unpacking $bin.tar.xz"
    tar -C "$(dirname "$bin")" -xJf "$bin.tar.xz"
fi
for b in shareflow policy_parity policy_grad qwen3_policy video_policy bench_policy; do
    if [[ ! -x "$bin/$b" ]]; then
        echo "gpu_check.sh: $bin/$b missing: build it with scripts/build_gpu_check.sh$([[ $dry == 1 ]] && echo ' --cpu')" >&2
        exit 2
    fi
done

# The CUDA 13 libraries candle loads at run time (cuBLAS, cuBLASLt, cuRAND, NVRTC, cudart) come
# with PyTorch's CUDA wheels; the driver's libcuda is the system's.
if [[ $dry == 0 ]]; then
    libs="$("$python" - <<'EOF'
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except ImportError:
    roots = []
import torch
roots.append(os.path.join(os.path.dirname(torch.__file__), "lib"))
dirs = sorted({os.path.dirname(p) for r in roots for p in glob.glob(os.path.join(r, "**", "lib*.so*"), recursive=True)})
print(":".join(dirs))
EOF
)"
    export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >> "$log" 2>&1
    # Fail fast, before minutes of set-up, when the binaries cannot start here.
    missing="$(ldd "$bin/shareflow" 2>&1 | grep 'not found' || true)"
    if [[ -n "$missing" ]]; then
        echo "gpu_check.sh: $bin/shareflow cannot start: $missing" >&2
        echo "  (it needs the NVIDIA driver's libcuda.so.1 and CUDA 13's cuBLAS, cuRAND, NVRTC and" >&2
        echo "   cudart: a PyTorch CUDA 13 install; LD_LIBRARY_PATH was set to: $LD_LIBRARY_PATH)" >&2
        exit 2
    fi
    torch_cuda="$("$python" -c 'import torch; print(torch.version.cuda or "")')"
    if [[ "$torch_cuda" != 13* ]]; then
        echo "gpu_check.sh: PyTorch here is built for CUDA '$torch_cuda'; the check needs CUDA 13" >&2
        exit 2
    fi
fi
env_json="$("$python" -c "
import json, platform, torch, transformers
print(json.dumps({'torch': torch.__version__, 'transformers': transformers.__version__,
  'cuda': torch.version.cuda, 'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None,
  'python': platform.python_version(), 'dry_run': $dry == 1}))")"
record environment passed 0 "$env_json"

ok=1
# 1. Parity on the device, f32 and bf16 (the tests hold both).
for t in policy_parity policy_grad qwen3_policy video_policy; do
    SHAREFLOW_TEST_DEVICE=$device SHAREFLOW_REPO="$repo" RUST_BACKTRACE=1 \
        run_step "parity_$t" 45 "$bin/$t" --test-threads 1 --nocapture || ok=0
done

# 2. The 3B-shaped checkpoint (a shrunken one in the dry run, whose CPU benches would take long).
shaped="$work/qwen2_5_vl_3b_shaped"
if [[ $dry == 1 ]]; then
    shrink=(--set num_hidden_layers=1 --set vision_config.depth=1 --set 'vision_config.fullatt_block_indexes=[0]' --set vocab_size=448)
    bench_dir="$repo/tests/golden/policy/tiny-qwen2_5_vl"
    repeats=1
    train_sets=(--set trainer.total_steps=2 --set data.val_size=16)
else
    shrink=()
    bench_dir="$shaped"
    repeats=3
    train_sets=(--set trainer.total_steps=3 --set data.val_size=64)
fi
run_step shaped_checkpoint 90 "$python" scripts/gpu_shaped_checkpoint.py --out "$shaped" \
    --device "$torch_device" "${shrink[@]}" || ok=0
# shareflow loads it and scores one multimodal response.
run_step shaped_checkpoint_loads 30 "$bin/shareflow" logprobs --model "$shaped" \
    --device "$device" --dtype "$dtype" --question "How many shapes are in the image?" \
    --response "3" --image tests/golden/policy/images/sq56.png || ok=0

# 3. PyTorch eager / HF generate, and 4. shareflow, on the same directory and workload.
run_step torch_eager 90 "$python" tests/golden/policy/bench_torch.py --dir "$bench_dir" \
    --device "$torch_device" --dtype "$torch_dtype" --repeats "$repeats" || ok=0
# bench_torch.py prints indented JSON: keep it whole.
whole_json torch_eager
SHAREFLOW_BENCH_MODEL="$bench_dir" SHAREFLOW_BENCH_DEVICE=$device SHAREFLOW_BENCH_DTYPE=$dtype \
    SHAREFLOW_BENCH_JSON=1 run_step shareflow_bench 120 "$bin/bench_policy" "$repeats" || ok=0

# 5. The embedded task, a few steps on the device.
run_step train_embedded 90 "$bin/shareflow" train --quiet \
    --set trainer.device=$device --set trainer.dtype=$dtype "${train_sets[@]}" --set trainer.val_freq=0 \
    --set trainer.output_dir="$work/runs" --set trainer.experiment_name=gpu-check || ok=0
# The summary is pretty-printed JSON on stdout.
whole_json train_embedded

write_out final
say "figures in $out_file, log in $log"
rm -rf "$work"
[[ $ok == 1 ]]
