# Source before `cargo build --features cuda` (after scripts/cuda-setup.sh):
# candle-kernels compiles its kernels with this nvcc for sm_90 (H100/H200),
# cudarc binds CUDA 13.0. At run time the binary needs the driver's
# libcuda.so.1 and libcudart.so.13, libcublas.so.13, libcurand.so.10 (from
# a CUDA 13 install or PyTorch's nvidia-* wheels) on LD_LIBRARY_PATH.
export CUDA_ROOT="${TELEMINE_CUDA_ROOT:-$HOME/.cache/cuda-root}"
export CUDA_HOME="$CUDA_ROOT" CUDA_PATH="$CUDA_ROOT" CUDA_TOOLKIT_ROOT_DIR="$CUDA_ROOT"
export NVCC="$CUDA_ROOT/bin/nvcc"
export PATH="$CUDA_ROOT/bin:$PATH"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export LIBRARY_PATH="$CUDA_ROOT/lib64:$CUDA_ROOT/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-2}"
