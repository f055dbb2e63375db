#!/usr/bin/env bash
# The CUDA agreement and throughput check, in two halves:
#
#   scripts/gpu-check.sh build   # here (no GPU needed): builds gpu/gpu_check
#   scripts/gpu-check.sh run     # on the GPU machine, from the repo root
#
# `build` needs scripts/cuda-setup.sh done once. `run` finds the CUDA
# libraries the binary links (libcudart, libcublas, libcurand) on the
# machine and prints, per detector, CPU against CUDA scores on the same
# batch and rows/s on each (model/examples/gpu_check.rs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
case "${1:-}" in
  build)
    # shellcheck source=/dev/null
    source scripts/cuda-env.sh
    export CARGO_TARGET_DIR="${TELEMINE_CUDA_TARGET:-$HOME/.cache/cuda-target}"
    cargo build --release -p telemine-model --features cuda --example gpu_check
    mkdir -p gpu
    cp "$CARGO_TARGET_DIR/release/examples/gpu_check" gpu/gpu_check
    strip gpu/gpu_check
    ls -la gpu/gpu_check
    ;;
  run)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    L=""
    for f in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13; do
      p=$(find / -xdev -name "$f" -not -path '/proc/*' 2>/dev/null | head -1)
      [ -n "$p" ] && L="$L:$(dirname "$p")"
    done
    export LD_LIBRARY_PATH="${L#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    gpu/gpu_check "${2:-1048576}"
    ;;
  *)
    echo "usage: scripts/gpu-check.sh build | run [ROWS]" >&2
    exit 2
    ;;
esac
