#!/usr/bin/env bash
# Did a change leave the CUDA kernels' machine code alone? Compiles native/cuda/*.cu at REV (default HEAD, from a
# temporary git worktree) and in the working tree, to cubins for sm_80 and sm_90a, and compares each kernel's
# .text bytes (scripts/cubin_kernels.py): prints the kernels whose code is in neither's list of the other (new code,
# and kernels gone), and a count of those whose code is byte for byte one of REV's. No GPU needed (nvcc only).
#   bash scripts/same-kernels.sh [REV]
# A refactor that takes out unused kernels or template parameters should leave "new code: 0". A kernel whose
# parameter struct changed shows as new code (its loads read other offsets): compare its SASS with the offsets
# masked (scripts/sass.sh's listing, c[0x0][...] replaced) to see that nothing else moved.
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:-HEAD}"
work=$(mktemp -d /tmp/same-kernels.XXXXXX)
trap 'git worktree remove --force "$work/rev" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/rev" "$rev" >/dev/null 2>&1 || { echo "same-kernels: no revision $rev" >&2; exit 2; }
build() {  # build SRC_ROOT OUT_DIR
  mkdir -p "$2"
  for f in "$1"/native/cuda/*.cu; do
    b=$(basename "$f" .cu)
    nvcc -std=c++17 -O3 -I"$1/native" --expt-relaxed-constexpr -gencode=arch=compute_80,code=sm_80 -cubin "$f" -o "$2/$b.80.cubin" &
    nvcc -std=c++17 -O3 -I"$1/native" --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -cubin "$f" -o "$2/$b.90a.cubin" &
    wait
  done
}
build "$work/rev" "$work/before"
build . "$work/after"
status=0
for arch in 80 90a; do
  python3 scripts/cubin_kernels.py "$work"/before/*."$arch".cubin > "$work/before.$arch"
  python3 scripts/cubin_kernels.py "$work"/after/*."$arch".cubin > "$work/after.$arch"
  new=$(awk 'NR == FNR { had[$1] = 1; next } !($1 in had)' "$work/before.$arch" "$work/after.$arch")
  gone=$(awk 'NR == FNR { has[$1] = 1; next } !($1 in has)' "$work/after.$arch" "$work/before.$arch")
  same=$(( $(wc -l < "$work/after.$arch") - $(printf '%s' "$new" | grep -c . || true) ))
  echo "sm_$arch: $(wc -l < "$work/after.$arch") kernels ($(wc -l < "$work/before.$arch") at $rev); $same with $rev's code byte for byte;" \
       "new code: $(printf '%s' "$new" | grep -c . || true); code gone: $(printf '%s' "$gone" | grep -c . || true)"
  [[ -n "$new" ]] && { printf '%s\n' "$new" | sed 's/^/  new code: /' | cut -c1-200; status=1; }
  [[ -n "$gone" ]] && printf '%s\n' "$gone" | sed 's/^/  code gone: /' | cut -c1-200
done
exit $status
