#!/usr/bin/env bash
# The SASS (machine code) of one CUDA file, and its kernels' inner loops counted (scripts/sass_loops.py):
# how many instructions a kernel's hot loop issues per tile, measured without a GPU.
#   bash scripts/sass.sh native/cuda/attention_flash.cu [SUBSTRING ...]    (listing in /tmp/sass/<file>.sass)
# ARCH=sm_90a (default) or sm_80. Needs nvcc (any) and an nvdisasm: NVDISASM=/path, else one on PATH. This
# machine's CUDA 13 has none; Debian's non-free nvidia-cuda-toolkit 11.8 has one (apt-get download
# nvidia-cuda-toolkit; dpkg -x it somewhere; NVDISASM=that/usr/bin/nvdisasm). That nvdisasm predates the ELF
# header CUDA 12.8+ writes (ABI version 8, new e_flags), so a copy of the cubin gets the old header for the
# same SM (ABI version 7, EF_CUDA_SM<n> | EF_CUDA_VIRTUAL_SM(<n>) | 64-bit | unified texture mode); the code
# itself is untouched. It decodes sm_80 and most sm_90 instructions (mma.sync, ldmatrix, cp.async), not wgmma;
# the few it cannot (VIADD and a handful more, ~1% of a listing) it leaves out without a word, and
# sass_loops.py counts those gaps in the addresses as '?'.
set -euo pipefail
cd "$(dirname "$0")/.."
file="${1:?usage: bash scripts/sass.sh FILE.cu [SUBSTRING ...]}"
shift
arch="${ARCH:-sm_90a}"
nvdisasm="${NVDISASM:-$(command -v nvdisasm || true)}"
[[ -x "$nvdisasm" ]] || { echo "sass: no nvdisasm (set NVDISASM; see this script's header)" >&2; exit 2; }
case "$arch" in
  sm_90a) gen="arch=compute_90a,code=sm_90a"; sm=0x5a ;;
  sm_80) gen="arch=compute_80,code=sm_80"; sm=0x50 ;;
  *) echo "sass: ARCH sm_90a or sm_80" >&2; exit 2 ;;
esac
out=/tmp/sass
mkdir -p "$out"
base="$out/$(basename "$file" .cu)"
nvcc -std=c++17 -O3 -Inative --expt-relaxed-constexpr -gencode="$gen" -cubin "$file" -o "$base.cubin"
python3 - "$base.cubin" "$base.old.cubin" "$sm" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], 'rb').read())
sm = int(sys.argv[3], 0)
b[8] = 7                                             # e_ident[EI_ABIVERSION]
struct.pack_into('<I', b, 0x30, sm | (sm << 16) | 0x500)  # e_flags (ELF64), the pre-12.8 layout
open(sys.argv[2], 'wb').write(b)
PY
"$nvdisasm" -c "$base.old.cubin" > "$base.sass"
echo "sass: $base.sass ($arch)"
python3 scripts/sass_loops.py "$base.sass" "$@"
