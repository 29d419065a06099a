#!/usr/bin/env bash
# Link-time stubs of the CUDA libraries a `--features cuda` binary is linked against, for
# building on a machine without a GPU driver or the full CUDA toolkit:
#
#     dir="$(scripts/cuda_link_stubs.sh)"   # prints the folder; add it to LIBRARY_PATH
#
# candle links cudarc with `dynamic-linking`: the binary names libcuda.so.1, libnvrtc.so.13,
# libcurand.so.10, libcublas.so.13 and libcublasLt.so.13 as needed libraries. The real ones come
# with the NVIDIA driver and a CUDA 13 install (PyTorch's wheels) on the GPU machine, where the
# dynamic loader finds them by those names; at link time only their symbol names matter. This
# script compiles one empty function per symbol that cudarc's bindings declare (its
# `src/<lib>/sys/mod.rs`, found through `cargo metadata`), into shared objects with the real
# sonames, in target/cuda-stubs/. This is what NVIDIA's own `lib/stubs/libcuda.so` is for; those
# stubs are not on PyPI. The stubs are never loaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(pwd)/target/cuda-stubs"
mkdir -p "$out"
cudarc="$( (cargo metadata --format-version 1 --locked --features cuda 2>/dev/null || true) | python3 -c '
import json, os, sys
try:
    packages = json.load(sys.stdin)["packages"]
except ValueError:
    packages = []
for p in packages:
    if p["name"] == "cudarc":
        print(os.path.dirname(p["manifest_path"]))
        break')"
if [[ -z "$cudarc" || ! -d "$cudarc/src" ]]; then
    echo "cuda_link_stubs.sh: cudarc's source not found (run cargo fetch)" >&2
    exit 1
fi
# lib  soname  bindings
while read -r lib soname sys; do
    c="$out/$lib.c"
    grep -oE '^\s+fn [a-zA-Z][A-Za-z0-9_]*\(' "$cudarc/src/$sys/sys/mod.rs" \
        | sed -E 's/^\s+fn ([A-Za-z0-9_]+)\(/void \1(void) {}/' | sort -u > "$c"
    gcc -shared -fPIC -o "$out/lib$lib.so" -Wl,-soname,"$soname" "$c"
done <<'EOF'
cuda libcuda.so.1 driver
nvrtc libnvrtc.so.13 nvrtc
curand libcurand.so.10 curand
cublas libcublas.so.13 cublas
cublasLt libcublasLt.so.13 cublaslt
EOF
echo "$out"
