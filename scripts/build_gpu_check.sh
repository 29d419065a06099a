#!/usr/bin/env bash
# Builds what scripts/gpu_check.sh runs, on a machine with cargo (no GPU needed), into
# target/gpu-check/ and target/gpu-check.tar.xz (or target/gpu-check-cpu/ with --cpu, for the
# CPU dry run):
#
#     scripts/build_gpu_check.sh          # --features cuda; nvcc from PyPI (install_nvcc.sh)
#     scripts/build_gpu_check.sh --cpu    # the same binaries without CUDA
#
#   shareflow       the CLI (train, logprobs, generate)
#   policy_parity, policy_grad, qwen3_policy, video_policy
#                   the policy parity tests against the transformers goldens; they take their
#                   device from SHAREFLOW_TEST_DEVICE and the repository from SHAREFLOW_REPO
#   bench_policy    benches/policy.rs (rollout tokens/s, training step), placed by
#                   SHAREFLOW_BENCH_MODEL / _DEVICE / _DTYPE
#
# The CUDA build links against stubs of libcuda, cuBLAS(Lt), cuRAND and NVRTC
# (scripts/cuda_link_stubs.sh): no driver or CUDA toolkit is needed here.
# Release profile, debug info stripped (the GPU machine has no cargo: the folder is carried
# there with the repository). CUDA_COMPUTE_CAP (default 90: H100/H200) picks the GPU architecture.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-cuda}"
if [[ "$mode" == "--cpu" ]]; then
    features=()
    target=target
    out=target/gpu-check-cpu
else
    eval "$(scripts/install_nvcc.sh)"
    # Link against stubs of the driver and CUDA libraries (scripts/cuda_link_stubs.sh); the GPU
    # machine's real ones are loaded at run time.
    LIBRARY_PATH="$(scripts/cuda_link_stubs.sh):$LIBRARY_PATH"
    export LIBRARY_PATH
    features=(--features cuda)
    target=target/cuda
    out=target/gpu-check
fi
export CARGO_TARGET_DIR="$target"
mkdir -p "$out"
executables() { python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'; }
{
    cargo build --release --locked "${features[@]}" --bin shareflow --message-format=json
    cargo test --release --locked "${features[@]}" -p shareflow-operators --no-run \
        --test policy_parity --test policy_grad --test qwen3_policy --test video_policy \
        --message-format=json
    cargo bench --locked "${features[@]}" --bench policy --no-run --message-format=json
} | executables | while read -r name path; do
    [[ "$name" == policy ]] && name=bench_policy
    cp "$path" "$out/$name"
    strip "$out/$name"
done
ls -la "$out"
du -sh "$out"
# One archive to carry (the binaries share candle's CUDA kernels: xz's 64 MiB window keeps one
# copy; about 36 MB for the CUDA set against 330 MB unpacked). gpu_check.sh unpacks it.
tar -C "$(dirname "$out")" -cf - "$(basename "$out")" | xz -9 -T2 > "$out.tar.xz"
ls -la "$out.tar.xz"
