#!/usr/bin/env bash
# Runs the CUDA backend's HOST code on the CPU (test/cuda_host/README.md): the .cu files that launch no kernel of
# their own (lora_group.cu, lora_linear.cu, lora_pack.cu) compiled by nvcc as they are, linked with a fake device
# (test/cuda_host/fake_device.cpp: host memory, and gemm() / the packs done on the CPU to gemm.h's contracts),
# and checked against each other and the math (test/cuda_host/*_check.cpp); and the allocator's book of blocks
# (native/cuda/block_cache.h) on its own. Needs nvcc and the CUDA runtime
# library (no GPU, no cuBLAS); skips, saying so, without nvcc. test/cuda_host/cuda_host.test.ts runs it in CI.
#   NVCC=/path/to/nvcc bash scripts/cuda-host-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/find-nvcc.sh
if [[ -z "$NVCC" ]]; then
  echo "cuda-host-check: skipped (no nvcc on PATH or in /usr/local/cuda/bin)"
  exit 0
fi
CUDA_LIB=""  # the CUDA runtime library: next to nvcc's toolkit, or where Debian's packages put it
for d in "$(dirname "$(readlink -f "$NVCC")")/../lib64" "$(dirname "$NVCC")/../lib64" /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
  if [[ -e "$d/libcudart_static.a" ]]; then CUDA_LIB=$d; break; fi
done
if [[ -z "$CUDA_LIB" ]]; then echo "cuda-host-check: no libcudart_static.a beside $NVCC"; exit 1; fi
CORE=build/libinstill_core.a  # the CPU build's core (npm ci / npm run build:native), for the model's check
if [[ ! -f "$CORE" ]]; then echo "cuda-host-check: no $CORE (build the addon first: npm run build:native)"; exit 1; fi
if ar t "$CORE" | grep -q '\.cu\.o$'; then  # exit 3: the test skips (outside CI) with this line
  echo "cuda-host-check: skipped ($CORE is a CUDA build; the check links a CPU build's: INSTILL_CUDA=off npm run build:native)"
  exit 3
fi
if [[ -n "$(find native -name '*.cpp' -newer "$CORE" -print -quit)" ]]; then
  echo "cuda-host-check: $CORE is older than native/ (npm run build:native first: the model's check would test the old code)"
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
FLAGS=(-std=c++17 -O1 -Inative -I. -DINSTILL_CUDA)
jobs="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
compile() {  # OUT COMMAND...: in the background, at most $jobs at once; its exit status into OUT.rc
  local out=$1; shift
  while (( $(jobs -rp | wc -l) >= jobs )); do wait -n 2>/dev/null || true; done
  ( "$@" -o "$out"; echo $? > "$out.rc" ) &
}
# the CUDA sources under test, the fake device and backend, and the checks (which include the backend's headers)
# through nvcc; the runtime they stand on through g++, with INSTILL_CUDA where it names the CUDA hooks and backend
for f in native/cuda/lora_group.cu native/cuda/lora_linear.cu native/cuda/lora_pack.cu test/cuda_host/fake_device.cpp \
         test/cuda_host/fake_backend.cpp test/cuda_host/lora_group_check.cpp test/cuda_host/model_check.cpp; do
  compile "$tmp/$(basename "$f").o" "$NVCC" "${FLAGS[@]}" -x cu --expt-relaxed-constexpr -Werror all-warnings \
    -gencode=arch=compute_80,code=sm_80 -c "$f"
done
for f in native/runtime/{tensor,device,error,dtype,op_profile,next,host_cache,cpu_features,thread_pool}.cpp; do
  compile "$tmp/runtime_$(basename "$f").o" g++ "${FLAGS[@]}" -Wall -Wextra -Werror -c "$f"
done
compile "$tmp/ops_backend.o" g++ "${FLAGS[@]}" -Wall -Wextra -Werror -c native/ops/backend.cpp
compile "$tmp/block_cache_check.o" g++ "${FLAGS[@]}" -Wall -Wextra -Werror -c test/cuda_host/block_cache_check.cpp
wait  # every compile finishes before the folder goes
if grep -qv '^0$' "$tmp"/*.rc; then echo "cuda-host-check: a compile failed (above)"; exit 1; fi
LIBS=(-L"$CUDA_LIB" -lcudart_static -ldl -lpthread -lrt)
# each check: its explicit objects first (the CUDA hooks; for the model's, the backend registry with CUDA), then the
# CPU core (lora_group_check runs the CPU's lora_group too)
g++ "$tmp"/{lora_group.cu,lora_linear.cu,fake_device.cpp,lora_group_check.cpp}.o "$tmp/runtime_device.cpp.o" "$CORE" \
  "${LIBS[@]}" -o "$tmp/lora_group_check"
g++ "$tmp"/{lora_group.cu,lora_linear.cu,lora_pack.cu,fake_device.cpp,fake_backend.cpp,model_check.cpp}.o "$tmp/runtime_device.cpp.o" \
  "$tmp/ops_backend.o" "$CORE" "${LIBS[@]}" -o "$tmp/model_check"
g++ "$tmp/block_cache_check.o" -o "$tmp/block_cache_check"
rc=0
echo "== the CUDA allocator's book of blocks (test/cuda_host/block_cache_check.cpp)"
"$tmp/block_cache_check" || rc=1
echo "== lora_group.cu against lora_linear.cu and the math (test/cuda_host/lora_group_check.cpp)"
"$tmp/lora_group_check" || rc=1
echo "== the model's CUDA policy on the fake device (test/cuda_host/model_check.cpp)"
"$tmp/model_check" || rc=1
exit $rc
