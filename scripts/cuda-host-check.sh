#!/usr/bin/env bash
# Runs the CUDA backend's HOST code on the CPU (test/cuda_host/README.md): the .cu files that launch no kernel of
# their own (lora_group.cu, lora_linear.cu) compiled by nvcc as they are, linked with a fake device
# (test/cuda_host/fake_device.cpp: host memory, and gemm() / the packs done on the CPU to gemm.h's contracts),
# and checked against each other and the math (test/cuda_host/*_check.cpp). Needs nvcc and the CUDA runtime
# library (no GPU, no cuBLAS); skips, saying so, without nvcc. test/cuda_host/cuda_host.test.ts runs it in CI.
#   NVCC=/path/to/nvcc bash scripts/cuda-host-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC="${NVCC:-}"
if [[ -z "$NVCC" ]]; then
  if command -v nvcc >/dev/null 2>&1; then NVCC=$(command -v nvcc)
  elif [[ -x /usr/local/cuda/bin/nvcc ]]; then NVCC=/usr/local/cuda/bin/nvcc
  fi
fi
if [[ -z "$NVCC" ]]; then
  echo "cuda-host-check: skipped (no nvcc on PATH or in /usr/local/cuda/bin)"
  exit 0
fi
CUDA_LIB=""  # the CUDA runtime library: next to nvcc's toolkit, or where Debian's packages put it
for d in "$(dirname "$(readlink -f "$NVCC")")/../lib64" "$(dirname "$NVCC")/../lib64" /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
  if [[ -e "$d/libcudart_static.a" ]]; then CUDA_LIB=$d; break; fi
done
if [[ -z "$CUDA_LIB" ]]; then echo "cuda-host-check: no libcudart_static.a beside $NVCC"; exit 1; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
FLAGS=(-std=c++17 -O1 -Inative -DINSTILL_CUDA)
pids=()
# the CUDA sources under test and the fake device + checks (which include the backend's headers) through nvcc,
# the runtime they stand on through g++
for f in native/cuda/lora_group.cu native/cuda/lora_linear.cu test/cuda_host/fake_device.cpp test/cuda_host/lora_group_check.cpp; do
  "$NVCC" "${FLAGS[@]}" -x cu --expt-relaxed-constexpr -Werror all-warnings -gencode=arch=compute_80,code=sm_80 \
    -c "$f" -o "$tmp/$(basename "$f").o" & pids+=($!)
done
for f in native/runtime/{tensor,device,error,dtype,op_profile,next,host_cache,cpu_features,thread_pool}.cpp; do
  g++ "${FLAGS[@]}" -Wall -Wextra -Werror -c "$f" -o "$tmp/$(basename "$f").o" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
g++ "$tmp"/*.o -L"$CUDA_LIB" -lcudart_static -ldl -lpthread -lrt -o "$tmp/lora_group_check"
"$tmp/lora_group_check"
