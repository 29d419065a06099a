#!/usr/bin/env bash
# CUDA 13.0's compiler from PyPI (no CUDA toolkit install, no GPU needed), for building shareflow
# with `--features cuda`:
#
#     eval "$(scripts/install_nvcc.sh)"          # installs once, prints the exports
#     cargo build --release --features cuda
#
# The wheels pinned in scripts/cuda-toolchain.txt go into a virtual environment at
# ${SHAREFLOW_NVCC_VENV:-$HOME/.cache/shareflow/nvcc} (about 300 MB). The script prints, on stdout,
# the environment the build needs:
#   CUDA_HOME        the wheels' CUDA root (nvcc, headers, libcudart for linking),
#   PATH             with its bin/ first (cudarc asks `nvcc --version` for the CUDA version),
#   CUDA_COMPUTE_CAP the GPU architecture candle's kernels are compiled for (default 90, the
#                    H100/H200; set it before running for another GPU, e.g. 80 for A100),
#   LIBRARY_PATH     where the linker finds libcudart.so.
# Running the binary needs the NVIDIA driver and CUDA 13's libraries on the GPU machine (a
# PyTorch CUDA 13 install carries them; scripts/gpu_check.sh finds them there).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${SHAREFLOW_NVCC_VENV:-$HOME/.cache/shareflow/nvcc}"
req="$here/cuda-toolchain.txt"
stamp="$venv/.installed-$(sha256sum "$req" | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
    echo "installing CUDA's compiler from PyPI into $venv" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
    touch "$stamp"
fi
root="$("$venv/bin/python" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
if [[ ! -x "$root/bin/nvcc" ]]; then
    echo "install_nvcc.sh: $root/bin/nvcc missing after the install; remove $venv and retry" >&2
    exit 1
fi
# The runtime wheel ships only the versioned library; the linker looks for libcudart.so.
if [[ ! -e "$root/lib/libcudart.so" ]]; then
    ln -s libcudart.so.13 "$root/lib/libcudart.so"
fi
echo "export CUDA_HOME='$root'"
echo "export PATH='$root/bin':\"\$PATH\""
echo "export CUDA_COMPUTE_CAP=\"\${CUDA_COMPUTE_CAP:-90}\""
echo "export LIBRARY_PATH='$root/lib':\"\${LIBRARY_PATH:-}\""
echo "install_nvcc.sh: $("$root/bin/nvcc" --version | tail -1)" >&2
