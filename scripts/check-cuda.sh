#!/usr/bin/env bash
# Compile-only check of the CUDA backend: every native/cuda/*.cu through nvcc
# for sm_80 (the portable mma.sync/WMMA path) and sm_90a (Hopper), object files
# only, into a temporary folder; and their compute_90a PTX, in which every kernel
# must wait for the kernel ahead before it touches global memory
# (scripts/pdl_ptx_check.py). Needs nvcc and the CUDA runtime headers, no GPU and
# no cuBLAS (cuBLASLt is loaded at run time). Skips, saying so, when nvcc is
# absent. Used by .ci/run; run it by hand after touching native/cuda.
#   NVCC=/path/to/nvcc bash scripts/check-cuda.sh
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/find-nvcc.sh
if [[ -z "$NVCC" ]]; then
  echo "check-cuda: skipped (no nvcc on PATH or in /usr/local/cuda/bin)"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
jobs="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
echo "check-cuda: $("$NVCC" --version | tail -1), sm_80 + sm_90a, $jobs jobs"
shopt -s nullglob
files=(native/cuda/*.cu)
if (( ${#files[@]} == 0 )); then echo "check-cuda: no .cu files"; exit 1; fi
printf '%s\n' "${files[@]}" | xargs -P "$jobs" -I{} sh -c '
  f="$1"; o="$2/$(basename "$f" .cu).o"
  if "$3" -std=c++17 -O3 -Inative --expt-relaxed-constexpr -Werror all-warnings \
       -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90a,code=sm_90a \
       -c "$f" -o "$o" 2>"$o.log"; then
    echo "  ok   $f"
  else
    echo "  FAIL $f"; cat "$o.log"; exit 255
  fi
  "$3" -std=c++17 -O3 -Inative --expt-relaxed-constexpr -arch=compute_90a -ptx "$f" -o "${o%.o}.ptx" 2>>"$o.log" \
    || { echo "  FAIL $f (compute_90a PTX)"; cat "$o.log"; exit 255; }' _ {} "$tmp" "$NVCC"
echo "check-cuda: ${#files[@]} files compiled"
# every kernel waits (pdl_enter(): common.cuh) before it touches global memory, in the code the compiler made
python3 scripts/pdl_ptx_check.py "$tmp"/*.ptx
