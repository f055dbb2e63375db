#!/usr/bin/env bash
# Installs a CUDA 13.0 build toolchain without a GPU or NVIDIA's installer:
# nvcc, headers and the libraries candle links against come from PyPI
# wheels into a venv; a link-only stub stands in for the driver's
# libcuda.so. Idempotent. Then `source scripts/cuda-env.sh` and build with
# `--features cuda`. Needs python3 with venv, gcc, and `cargo fetch` done
# (the stub's symbols are read from cudarc's driver bindings).
#
# CUDA 13.0 matches the GPU machines' driver (580): PTX from a newer
# toolkit would not load there, so every wheel is pinned — nvidia-nvvm too,
# which nvidia-cuda-nvcc would otherwise pull unpinned at a newer version.
set -euo pipefail
V="${TELEMINE_CUDA_VENV:-$HOME/.cache/cuda-venv}"
CR="${TELEMINE_CUDA_ROOT:-$HOME/.cache/cuda-root}"
[ -x "$V/bin/pip" ] || python3 -m venv "$V"
"$V/bin/pip" install -q \
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
  nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
C=$("$V/bin/python" -c 'import nvidia.cu13, os; print(list(nvidia.cu13.__path__)[0])')
mkdir -p "$CR/lib64/stubs" "$CR/src"
ln -sfn "$C/bin" "$CR/bin"
ln -sfn "$C/include" "$CR/include"
ln -sfn "$C/nvvm" "$CR/nvvm"
ln -sfn lib64 "$CR/lib"
for f in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 \
         libnvrtc-builtins.so.13.0 libcudart_static.a libcudadevrt.a; do
  ln -sf "$C/lib/$f" "$CR/lib64/$f"
done
(cd "$CR/lib64" && ln -sf libcudart.so.13 libcudart.so && ln -sf libcublas.so.13 libcublas.so \
  && ln -sf libcublasLt.so.13 libcublasLt.so && ln -sf libcurand.so.10 libcurand.so \
  && ln -sf libnvrtc.so.13 libnvrtc.so)
# libcuda.so belongs to the driver (not on PyPI): a stub with its symbols,
# for linking only; the GPU machine's driver provides the real one.
SYS=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10/src/driver/sys/mod.rs 2>/dev/null | head -1)
if [ -z "$SYS" ]; then
  echo "cuda-setup.sh: cudarc 0.19.10 is not in the cargo registry yet: run 'cargo fetch' first" >&2
  exit 1
fi
grep -oE '^\s*fn cu[A-Za-z0-9_]+\(' "$SYS" | sed -E 's/^\s*fn //;s/\(//' | sort -u \
  | awk 'BEGIN{print "/* link-time stub for libcuda.so.1 */"}{print "int " $0 "(void){return 999;}"}' \
  > "$CR/src/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CR/lib64/stubs/libcuda.so" "$CR/src/cuda_stub.c"
"$CR/bin/nvcc" --version | tail -2
