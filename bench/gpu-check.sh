#!/usr/bin/env bash
# ONE script for a GPU machine (H100/H200), under 8 minutes: build instill with
# the CUDA backend, run the GPU tests (test/cuda: every CUDA op against the CPU
# backend; LoRA gradients against the stories260K fixture), then the benchmarks
# against PyTorch / transformers+peft, then a short table LAST (the device tool
# returns the end of the output). Copy that table into bench/RESULTS.md.
#
# The GPU machine gets only the working tree (and carried ignored paths) and has no network, so prepare the
# git-ignored folders it needs HERE first (once per session, from the repository root; ~3 min with 2 cores, ~46 MB):
#
#   bash bench/gpu-check.sh --prepare
#
# (the --prepare branch below: .fixtures from INSTILL_FIXTURES or ../shared/fixtures; .gpu with node, used only if
# the machine has none, node_modules, and the CUDA build with .gpu/instill.node.src naming the sources it was built
# from, skipped where they match; dist/ for bench/gpu/instill_bench.mjs)
#
# then ONE device call (nothing else needs a GPU):
#
#   run(command="bash bench/gpu-check.sh", carry=[".fixtures", ".gpu", "dist"], timeout_s=540)
#
# Switches (environment): SKIP_WMMA=1 (no fallback tests), SKIP_TORCH=1 (no PyTorch benchmarks), PIECE_BATCH (the batch of the PIECE_AB A/Bs), ONLY_TRAIN=1 (the step A/Bs alone), SANITIZE=1 (the wgmma
# kernels under compute-sanitizer even where their tests passed), SKIP_NCU=1 (no Nsight
# Compute profiles), NCU_SETS (none by default; which: attention, lean), EXTRA_AB=1 (the cuBLASLt-tuned, f32-activation and bf16-MLP-activation
# steps too), SKIP_BENCH=1, TEST_PATHS, NEXT_AB, PIECE_AB, BATCHES, DEADLINE_S (each below).
#
# Logs and results.jsonl land in $OUT (fetched back with the reply; the logs in logs.tar.gz at the end, since the
# tool brings back at most 8 files: `tar -xzf logs.tar.gz` in the reply's files_at). Each step
# has its own timeout; a failing step is reported in the table and the script
# goes on, so one run always yields what it can. CI runs it end to end without a
# GPU (test/bench/gpu_check_dry.test.ts: every step noted, the table printed), so
# a step added here is checked before a GPU run depends on it.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# The native sources a carried binary must have been built from (bindings, native, CMakeLists.txt).
source_hash() { find bindings native CMakeLists.txt -type f ! -name '*.md' | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16; }  # docs excluded
if [[ "${1:-}" == --source-hash ]]; then source_hash; exit 0; fi
# piece_set SET FAILED: SET (a comma list of pieces) without those in FAILED (a comma list), as a comma list, or nothing
# (the A/Bs below; test/bench/gpu_check.test.ts runs it as `bash bench/gpu-check.sh --piece-set SET FAILED`)
piece_set() {
  local keep="" piece
  for piece in ${1//,/ }; do [[ ",$2," == *",$piece,"* ]] || keep="${keep:+$keep,}$piece"; done
  echo "$keep"
}
if [[ "${1:-}" == --piece-set ]]; then piece_set "${2:-}" "${3:-}"; exit 0; fi
if [[ "${1:-}" == --prepare ]]; then  # on the CPU machine: the carried folders (the header says which)
  set -e
  fixtures=${INSTILL_FIXTURES:-../shared/fixtures}
  mkdir -p .fixtures .gpu
  for f in stories260K configs; do
    [[ -d "$fixtures/$f" ]] || { echo "prepare: no $fixtures/$f (INSTILL_FIXTURES names the fixtures)"; exit 1; }
    rm -rf ".fixtures/$f" && cp -r "$fixtures/$f" .fixtures/
  done
  [[ -d node_modules ]] || { echo "prepare: no node_modules (npm ci first)"; exit 1; }
  xz -T2 -6 -c "$(command -v node)" > .gpu/node.xz
  tar --exclude=node_modules/typescript --exclude='node_modules/@types' -cJf .gpu/node_modules.tar.xz node_modules
  npx tsc -p tsconfig.json
  hash=$(source_hash)
  if [[ -f .gpu/instill.node && "$(cat .gpu/instill.node.src 2>/dev/null)" == "$hash" ]]; then
    echo "prepare: .gpu/instill.node is built from these sources already ($hash)"
  else
    rm -rf .gpu/instill.node .gpu/instill.node.src /tmp/build-cuda
    INSTILL_CUDA=on CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
      node node_modules/cmake-js/bin/cmake-js compile --directory . --out /tmp/build-cuda --CDINSTILL_CUDA=on > /tmp/build-cuda.log 2>&1 \
      || { tail -30 /tmp/build-cuda.log; echo "prepare: the CUDA build failed (/tmp/build-cuda.log)"; exit 1; }
    cp /tmp/build-cuda/Release/instill.node .gpu/
    echo "$hash" > .gpu/instill.node.src
  fi
  echo "prepare: ready ($(du -sh .fixtures .gpu dist | tr '\n\t' '  ')); binary from sources $(cat .gpu/instill.node.src)"
  echo 'then: run(command="bash bench/gpu-check.sh", carry=[".fixtures", ".gpu", "dist"], timeout_s=540)'
  exit 0
fi
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
RES="$OUT/results.jsonl"; STATUS="$OUT/status.txt"
: > "$RES"; : > "$STATUS"
T0=$(date +%s)
note() { echo "$1" | tee -a "$STATUS"; }
elapsed() { echo "$(( $(date +%s) - T0 ))s"; }
# Every step's timeout is cut to what is left of DEADLINE_S (default 470 s), less
# 20 s for the table, and a step with under 10 s left is skipped (noted), so the table
# is printed in time even when steps hang.
DEADLINE_S=${DEADLINE_S:-470}
budget() { local left=$(( DEADLINE_S - 20 - ($(date +%s) - T0) )); (( left < 0 )) && left=0; (( $1 < left )) && echo "$1" || echo "$left"; }
# step_time NAME SECONDS: the step's timeout (budget), or, under 10 s, a note that NAME was skipped and status 1:
#   t=$(step_time "bench x" 150) || return
# finish: the logs into one file (the device tool brings back at most 8 files from $OUT: results.jsonl, status.txt,
# table.md and logs.tar.gz stay), then the table LAST (the tool returns the end of the output), and exit.
finish() {
  local f files=()
  for f in "$OUT"/*.log "$OUT"/tuned.md "$OUT"/pieces.err "$OUT"/left-out.txt "$OUT"/gpu.txt "$OUT"/ncu-attention.txt "$OUT"/ncu-lean.txt; do
    [[ -f "$f" ]] && files+=("$(basename "$f")")
  done
  if (( ${#files[@]} )) && tar -czf "$OUT/logs.tar.gz" -C "$OUT" "${files[@]}"; then (cd "$OUT" && rm -f "${files[@]}"); fi
  echo "== table"; python3 bench/gpu/table.py "$RES" "$STATUS" | tee "$OUT/table.md"
  exit 0
}
step_time() {
  local t; t=$(budget "$2")
  if (( t < 10 )); then note "$1: skipped (DEADLINE_S reached, $(elapsed))" >&2; return 1; fi
  echo "$t"
}

# The CUDA toolkit's tools (nvcc for the wgmma probe's test, ncu, compute-sanitizer) where the PATH lacks them: the
# toolkit's bin and Nsight Compute's own folders, after what the PATH already has.
for d in /usr/local/cuda/bin /usr/local/cuda/nsight-compute-* /opt/nvidia/nsight-compute/*; do
  [[ -d "$d" && ":$PATH:" != *":$d:"* ]] && PATH="$PATH:$d"
done
export PATH
echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
(nvcc --version | tail -1; command -v ncu compute-sanitizer; cmake --version | head -1; python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)') 2>&1 | tee -a "$OUT/gpu.txt"

echo "== node and node_modules"
if ! command -v node >/dev/null 2>&1; then
  if [[ -f .gpu/node.xz ]]; then
    mkdir -p /tmp/nodebin && xz -dc .gpu/node.xz > /tmp/nodebin/node && chmod +x /tmp/nodebin/node
    export PATH=/tmp/nodebin:$PATH
  else
    note "node: MISSING (no node on the machine and no .gpu/node.xz carried)"
  fi
fi
if [[ ! -d node_modules && -f .gpu/node_modules.tar.xz ]]; then tar -xJf .gpu/node_modules.tar.xz; fi
node --version || true

echo "== build (INSTILL_CUDA=on) $(elapsed)"
export INSTILL_CUDA=on CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
# A binary built on the CPU machine with the same nvcc (.gpu/instill.node) saves a
# minute or two of GPU time; INSTILL_GPU_BUILD=1 builds here instead.
if [[ -f .gpu/instill.node && "$(cat .gpu/instill.node.src 2>/dev/null)" != "$(source_hash)" ]]; then
  note "carried .gpu/instill.node: built from other sources than these (or unmarked), so building here"
  INSTILL_GPU_BUILD=1
fi
if [[ -f .gpu/instill.node && "${INSTILL_GPU_BUILD:-0}" != 1 ]]; then
  rm -rf build && mkdir -p build/Release && cp .gpu/instill.node build/Release/
  note "build with CUDA: carried .gpu/instill.node (built on the CPU machine, $(nvcc --version 2>/dev/null | tail -1 | cut -c1-40))"
else
  rm -rf build
  if ! BUILD_S=$(step_time "build with CUDA" 300); then
    :  # skipped, noted by step_time
  elif timeout "$BUILD_S" node scripts/build-native.mjs > "$OUT/build.log" 2>&1; then
    note "build with CUDA: ok ($(elapsed))"
  else
    tail -30 "$OUT/build.log"
    note "build with CUDA: FAILED (see build.log)"
  fi
fi
node -e "import('./dist/src/index.js').then(m => { const i = m.runtime.info(); console.log('devices', i.devices) })" 2>&1 | tee -a "$OUT/gpu.txt"

# cuBLASLt (native/cuda/cublaslt.cu dlopens it): the toolkit's (what runs 5-13 loaded), else the pip nvidia-cublas
# layout torch loads, else torch's own lib; the first place that has one, its longest (most specific) version there.
INSTILL_CUBLASLT=$(python3 - <<'PY' 2>/dev/null
import glob, os, site
places = ["/usr/local/cuda/lib64"]
for d in site.getsitepackages() + [site.getusersitepackages()]:
    places += sorted(glob.glob(os.path.join(d, "nvidia", "*", "lib"))) + [os.path.join(d, "torch", "lib")]
for place in places:
    hits = sorted(glob.glob(os.path.join(place, "libcublasLt.so.*")), key=lambda h: (len(h), h))
    if hits:
        print(hits[-1])
        break
PY
)
export INSTILL_CUBLASLT INSTILL_CUBLASLT_VERBOSE=1
note "cuBLASLt: ${INSTILL_CUBLASLT:-not found (WMMA GEMM only)}"
node bin/instill.js info 2>&1 | grep -v '^  kernel pieces' | tee -a "$OUT/gpu.txt"  # (the GPU and its GEMM, as a user sees them)

echo "== GPU tests $(elapsed)"
export INSTILL_FIXTURES="$ROOT/.fixtures"
gpu_tests() {  # label, log name, then env assignments for the run; the test paths in TEST_PATHS (default test/cuda/:
  # the slash keeps vitest's path filter off test/cuda_host, the CPU-side check of the CUDA host code, which needs
  # the CPU build this machine replaced with the carried CUDA one)
  local label=$1 log="$OUT/tests-$2.log"; shift 2
  local -a paths=(${TEST_PATHS:-test/cuda/})
  local t
  if ! t=$(step_time "GPU tests (test/cuda, $label)" 200); then : > "$log"; return; fi
  # four test files at a time (each in its own process, its own CUDA context): the GPU has room, and the CPU
  # references have 16 cores; vitest.config.ts runs files one by one for the 2-core CI machine
  env NO_COLOR=1 FORCE_COLOR=0 "$@" timeout "$t" node node_modules/vitest/vitest.mjs run "${paths[@]}" \
    --fileParallelism --maxWorkers=4 > "$log" 2>&1
  local rc=$?
  tail -25 "$log"
  local summary verdict
  summary=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E "^ *Tests +[0-9]" | tail -1 | tr -s ' ')
  if [[ $rc == 124 ]]; then verdict="TIMED OUT (rc=124: its share of DEADLINE_S ran out; the tests it finished are in the log)"
  elif [[ $rc != 0 ]]; then verdict="FAIL rc=$rc"
  elif [[ "$summary" != *passed* ]]; then verdict="NOTHING RAN (all skipped: no GPU seen?)"
  else verdict=PASS; fi
  note "GPU tests (test/cuda, $label): $verdict -${summary:- no summary} ($(elapsed))"
  # which tests failed, by name (a next kernel's tests name it: "INSTILL_CUDA_NEXT=rope_qk", "kernels: NAME"; from
  # vitest's summary, or, where its timeout killed it before that, from the lines under each file: pieces.py --failed)
  if [[ $rc != 0 ]]; then
    python3 bench/gpu/pieces.py --failed "$log" 2>&1 | head -24 |
      while IFS= read -r t; do note "  failed: ${t:0:300}"; done
    # and why, as the assertions say it (test/helpers/diff.ts: which rows, heads, columns differ, and where the rows
    # sit in their segments and tiles), so that a failure can be worked on without a GPU
    sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(AssertionError|[A-Za-z]*Error):' | awk '!seen[$0]++' | head -12 |
      while IFS= read -r t; do note "  why: ${t:0:600}"; done
  fi
}
gpu_tests "GEMMs through cuBLASLt" cublaslt INSTILL_CUBLASLT="$INSTILL_CUBLASLT"
# The next pieces whose tests just failed, or never finished (bench/gpu/pieces.py reads the log), stay out of the
# step A/Bs below unless NEXT_AB was given: so one call times the pieces that passed, together.
# NEXT_ON=0: no next-kernel A/B is worth its time (every piece left out, or pieces.py itself failed).
# SWEEP_SKIP: the pieces the ops benchmark's attention sweep leaves out ("all": no sweep).
NEXT_ON=1
if python3 bench/gpu/pieces.py "$OUT/tests-cublaslt.log" > "$OUT/left-out.txt" 2> "$OUT/pieces.err"; then
  FAILED_PIECES=$(cut -d: -f1 "$OUT/left-out.txt" | grep -E '^[a-z0-9_]+$' | paste -sd, -)
  SWEEP_SKIP=$FAILED_PIECES
else  # which pieces failed is unknown: none of them in an A/B unless NEXT_AB names them, and no sweep
  FAILED_PIECES=""; SWEEP_SKIP=all; : > "$OUT/left-out.txt"
  if [[ -z "${NEXT_AB:-}" ]]; then NEXT_ON=0; fi
  note "bench/gpu/pieces.py failed ($(tr '\n' ' ' < "$OUT/pieces.err" | cut -c1-300)): $( ((NEXT_ON)) && echo "only NEXT_AB=$NEXT_AB's A/Bs" || echo "no next-kernel A/B") and no attention sweep in this call"
fi

[[ "${SKIP_BENCH:-0}" == 1 ]] && { note "benchmarks: skipped (SKIP_BENCH=1)"; finish; }
echo "== benchmarks $(elapsed)"
bench() {  # name timeout command...
  local name=$1 t; t=$(step_time "bench $name" "$2") || return; shift 2
  if timeout "$t" "$@" >> "$OUT/bench.log" 2>&1; then echo "  $name ok ($(elapsed))"
  else note "bench $name: FAILED or timed out (rc=$?; bench.log)"; fi
}
# torch_bench name timeout args...: bench/gpu/torch_bench.py ARGS as a bench step, or, with SKIP_TORCH=1 (a second call
# on a warm machine, whose first call timed torch already), a note that it was skipped
torch_bench() {
  if [[ "${SKIP_TORCH:-0}" == 1 ]]; then note "bench $1: skipped (SKIP_TORCH=1)"; return; fi
  local name=$1 t=$2; shift 2
  bench "$name" "$t" python3 bench/gpu/torch_bench.py "$@"
}
# The training step first (the target still open): PyTorch, instill by default, then the A/Bs of what waits for
# a GPU run (native/cuda/README.md lists it; opt-in until these A/Bs and test/cuda say so), the likeliest next
# default first, so that a tight deadline drops the smaller questions.
# NEXT_AB picks the next kernels these A/Bs run (INSTILL_CUDA_NEXT's syntax; default NEXT_SET): a second call can
# leave out one whose tests failed, e.g. NEXT_AB=default,-rope_qk SKIP_WMMA=1 ONLY_TRAIN=1 bash bench/gpu-check.sh
# (no fallback tests, no op benchmarks: about half the time), with no rebuild (the value is read at run time).
# NEXT_SET: the default and every waiting piece that can be on with the others, what a session would promote
# together (until stop 21 the default was `all`, which also turned on the pieces that lost runs 14-16 and those that
# override others, so no session could promote the set it timed). Stop 24 took out the two pieces run 18 measured
# no faster, and `skinny` (run 19: 1.059x), and added `ce_wide`, `attn_pack` and `dqkv_pack`; stop 25 added `ce_bf16`
# (with it on, `ce_wide` changes only a loss without gradients), `side_grads` and `group_fork`; stop 26 `flash_wgmma`,
# `dq_wgmma`, `dkv_wgmma` and `wgmma_mn` (stop 34 folded it into the three: swizzled tiles); stop 28 `norm_u`,
# `norm_g`, `swiglu_g` and `swiglu_u` (taken out in stop 32); stop 29 `async_upload` (below the A/B's noise alone: promoted on its tests, and a NEXT_SET no slower);
# stop 30 `pdl` (every kernel a programmatic dependent launch on compute capability 9.0: the ops benchmark's kernel chain
# times it per kernel, with and without; promoted on its tests, that chain, and a NEXT_SET no slower); stop 31 `qkv_one`
# (q, k and v as one product, rope reading them out of it; taken out in stop 33).
# Run 20 (H200, 2026-11-27) promoted ce_bf16 and side_grads, and timed the wgmma pieces (1.035x with wgmma_mn), the
# four narrow ones (1.25x; stop 32 took them out), pdl (0.6 us more a kernel boundary), group_fork and qkv_one (1.00x) no faster; run 21
# promoted async_upload (0.992x), and timed attn_pack with dqkv_pack at 0.998x by medians, 0.990x by mins, group_fork
# 1.014x (stop 32 took it out), qkv_one 1.000x, pdl 0.7 us less a kernel boundary (noise, both ways). Run 22 (stop 33)
# promoted attn_pack and dqkv_pack (0.989x by medians, 0.994x by mins) and timed qkv_one at 0.996x / 0.991x; runs 23
# and 24 timed it at 0.987x and 1.005x, and stop 33 took it out (no gain in five runs). Stop 33 added `delta_rows`
# (the attention backward's Δ a warp a token row, the same bits: ~0.26 ms of Δ a 1B step at batch 1, ~3x its bytes'
# time; its GPU test checks the bits) and `norm_rows` (rmsnorm's forward and dx a warp a row, the same bits: the block
# kernels ran at 39% and 63% of DRAM bandwidth in run 21's ncu, ~1 ms a 1B step) and `rope_rows` (rope_qk's pass a
# warp a token, the same bits: ~0.48 ms a step at ~4x its bytes' time), and `optim_loads` (AdamW and sum_squares with
# more bytes in flight, the same bits: ~0.3 ms a step, a per-step cost): NEXT_SET is the default with the four, and
# PIECE_AB times each alone. Promote each on its tests and a step no slower, at batch 1 and at batch 8 (the BATCHES
# A/B). Stop 35 added `ce_cluster` (the loss's bf16 softmax a row a cluster of 8 blocks, the row read once: run 21's
# 0.47 ms a 2048 tokens where the bytes read once take ~0.22; not the same bits, its sums in another order). Runs 25-30
# (stop 36) promoted the three wgmma pieces, and stop 36 took out norm_rows (slower), optim_loads and ce_cluster (no
# faster): NEXT_SET is the default with delta_rows and rope_rows. `ce_wide` is left out (a training step with ce_bf16
# never takes its path, NEXT_AB=default,-ce_bf16,ce_wide times it); NEXT_AB or PIECE_AB names the others where reworked.
# With NEXT_SET the default alone and no NEXT_AB
# there is no next-kernel A/B (it would time the default against itself). A new piece adds its name here.
NEXT_SET="default,delta_rows,rope_rows"
if [[ -z "${NEXT_AB:-}" && "$NEXT_SET" == default ]]; then
  note "no piece waits (NEXT_SET=default): no next-kernel A/B in this call (NEXT_AB=... names pieces to A/B)"
  NEXT_ON=0
elif [[ -z "${NEXT_AB:-}" && -n "$FAILED_PIECES" ]]; then
  NEXT_AB="$NEXT_SET,-${FAILED_PIECES//,/,-}"
  while IFS= read -r why; do note "left out of the A/Bs: $why"; done < "$OUT/left-out.txt"
  left=0
  for piece in ${NEXT_SET//,/ }; do
    [[ "$piece" == default || ",$FAILED_PIECES," == *",$piece,"* ]] || left=1
  done
  if (( ! left )); then note "every waiting piece left out: no next-kernel A/B in this call"; NEXT_ON=0; fi
fi
NEXT_AB=${NEXT_AB:-$NEXT_SET}
NEXT_LABEL="next kernels"
[[ "$NEXT_ON" == 1 && "$NEXT_AB" != all ]] && { note "next kernels in the A/Bs: INSTILL_CUDA_NEXT=$NEXT_AB"; NEXT_LABEL="next kernels $NEXT_AB"; }
torch_bench "torch train step" 150 train --config .fixtures/configs/llama-3.2-1b.json --out "$RES"
bench "instill train step" 150 node bench/gpu/instill_bench.mjs train --config .fixtures/configs/llama-3.2-1b.json --out "$RES"
# PIECE_AB: space-separated sets, each a comma list, each set whose tests passed in an A/B of its own
# (INSTILL_CUDA_NEXT=default,SET against the default): its own gain, which the all-pieces A/B below mixes with the
# others' (run 14: the loss of narrow, a piece since removed, hid flash_lean's gain there). Default (~15 s each;
# PIECE_AB="" for none): `delta_rows` and `rope_rows` (stop 33; runs 25-29 timed them with norm_rows, optim_loads and
# ce_cluster, which stop 36 took out; before them none since run 22, which promoted
# `attn_pack` and `dqkv_pack`, timed together here in runs 21 and 22). `qkv_one` (q, k and v's ~0.27 ms of products as one: runs 20-24 1.004x, 1.000x, 0.996x, 0.987x, 1.005x)
# was taken out in stop 33, as `group_fork`, the other way to that time, was in stop 32; `ce_wide` changes nothing in a
# training step with ce_bf16 on. Runs 20 and 21 timed the wgmma pieces, `ce_bf16`, `side_grads`, `async_upload` and the four narrow ones (taken
# out in stop 32) here (bench/RESULTS.md). (Run 16 timed lora_group, then with swiglu_pack, then
# with norm_pack, and promoted the three; run 17 fewer_packs, factor_pack and rope_qk together; run 18 bf16_beta and
# group_wide, both taken out.)
# (The three wgmma pieces were the last set until runs 25-27 timed them 0.949x-0.979x the step and stop 36 promoted
# them: the ops benchmark's attention sweep times the lean kernels against them, one by one.)
# PIECE_BATCH (default 1): the batch these A/Bs run at (8: each piece against BATCHES' default at 8, which BATCHES
# must then name).
PIECE_AB=${PIECE_AB-delta_rows rope_rows}
[[ -z "$PIECE_AB" ]] && note "A/Bs of single pieces: none (PIECE_AB=... names sets to A/B)"
# A set loses the pieces whose tests failed (stop 28's four narrow pieces were one set until stop 32 took them out, and
# one failing piece should not keep the others' A/B from the call) and is skipped where none is left or the rest was timed as a set already.
timed_sets=" "
for set in $PIECE_AB; do
  keep=$(piece_set "$set" "$FAILED_PIECES") bad=""
  for piece in ${set//,/ }; do [[ ",$keep," == *",$piece,"* ]] || bad="$bad $piece"; done
  if [[ "$SWEEP_SKIP" == all || -z "$keep" ]]; then note "A/B of default,$set: skipped (tests failed or did not run:${bad:- unknown})"; continue; fi
  if [[ "$timed_sets" == *" $keep "* ]]; then note "A/B of default,$set: skipped (without$bad it is default,$keep, timed above)"; continue; fi
  timed_sets="$timed_sets$keep "
  [[ -n "$bad" ]] && note "A/B of default,$set: without$bad (tests failed or did not run), as default,$keep"
  bench "instill train step (default,$keep)" 150 env INSTILL_CUDA_NEXT="default,$keep" INSTILL_BENCH_VARIANT="default,$keep" \
    node bench/gpu/instill_bench.mjs train --batch "${PIECE_BATCH:-1}" --config .fixtures/configs/llama-3.2-1b.json --out "$RES"
done
# INSTILL_CUDA_NEXT=$NEXT_AB (the waiting pieces together, those whose tests failed left out), with the default bf16
# activations: what promoting them all would give
(( NEXT_ON )) && bench "instill train step (next kernels)" 150 env INSTILL_CUDA_NEXT="$NEXT_AB" INSTILL_BENCH_VARIANT="$NEXT_LABEL" node bench/gpu/instill_bench.mjs train --config .fixtures/configs/llama-3.2-1b.json --out "$RES"
# the ops one by one (default kernels), then the attention's kernels under each set of the attention pieces (those
# whose tests passed): early, before what matters less if the deadline cuts the run short
[[ "${ONLY_TRAIN:-0}" != 1 ]] && bench "instill ops" 90 env INSTILL_BENCH_SKIP_PIECES="$SWEEP_SKIP" node bench/gpu/instill_bench.mjs ops --out "$RES"
# cuBLASLt tuned (INSTILL_CUBLASLT_TUNE=on: each product key's first call times the heuristic's first 8 algorithms and
# split-K variants of its first two): the step against the default, and, from its verbose log, each key's time with
# the heuristic's pick and with the one kept (bench/gpu/tuned.py: $OUT/tuned.md)
# These three (and the activations' two below) have said the same in every run since 13 (tuned: noise around 1.00x;
# f32 activations 1.18x, bf16 MLP-only 1.05x): EXTRA_AB=1 runs them, by default their ~75 s go to the pieces' A/Bs.
if [[ "${EXTRA_AB:-0}" != 1 ]]; then
  note "cuBLASLt tuned, f32 activations and bf16 MLP activations steps: skipped (EXTRA_AB=1 runs them)"
elif t=$(step_time "bench instill train step (cuBLASLt tuned)" 150); then
  if timeout "$t" env INSTILL_CUBLASLT_TUNE=on INSTILL_CUBLASLT_VERBOSE=1 INSTILL_BENCH_VARIANT="cuBLASLt tuned, split-K candidates" \
      node bench/gpu/instill_bench.mjs train --config .fixtures/configs/llama-3.2-1b.json --out "$RES" > "$OUT/tuned.log" 2>&1; then
    echo "  instill train step (cuBLASLt tuned) ok ($(elapsed))"
  else note "bench instill train step (cuBLASLt tuned): FAILED or timed out (rc=$?; tuned.log)"; fi
  python3 bench/gpu/tuned.py "$OUT/tuned.log" --top 12 > "$OUT/tuned.md" 2>&1
  note "cuBLASLt tuning (tuned.md): $(tail -1 "$OUT/tuned.md")"
fi
# the activations: bf16 is the default on a GPU since stop 18 (runs 14, 15); =0 keeps them f32, =mlp the attention's
if [[ "${EXTRA_AB:-0}" == 1 ]]; then
  bench "instill train step (f32 activations)" 150 env INSTILL_BF16_ACTIVATIONS=0 INSTILL_BENCH_VARIANT="f32 activations" \
    node bench/gpu/instill_bench.mjs train --config .fixtures/configs/llama-3.2-1b.json --out "$RES"
  bench "instill train step (bf16 MLP activations)" 150 env INSTILL_BF16_ACTIVATIONS=mlp \
    INSTILL_BENCH_VARIANT="bf16 norm and MLP activations" node bench/gpu/instill_bench.mjs train --config .fixtures/configs/llama-3.2-1b.json --out "$RES"
fi
# Batches above 1 (BATCHES, default "8": rows of 2048 a step, both sides, each row its own causal sequence, with the
# step's op profile): how much of the gap to the MFU target is batch 1's small products (M = 2048) and per-step costs;
# the default and the next kernels. The issue names no batch; runs 22-24 timed 4, 8 and 16 (44.4%, 44.4-44.9%, 44.3%
# MFU), and 8 is the nearest to 45%.
for b in ${BATCHES:-8}; do
  torch_bench "torch train step, batch $b" 150 train --batch "$b" --config .fixtures/configs/llama-3.2-1b.json --out "$RES"
  bench "instill train step, batch $b" 150 node bench/gpu/instill_bench.mjs train --batch "$b" --config .fixtures/configs/llama-3.2-1b.json --out "$RES"
  (( NEXT_ON )) && bench "instill train step, batch $b (next kernels)" 150 env INSTILL_CUDA_NEXT="$NEXT_AB" INSTILL_BENCH_VARIANT="$NEXT_LABEL" \
    node bench/gpu/instill_bench.mjs train --batch "$b" --config .fixtures/configs/llama-3.2-1b.json --out "$RES"
done
# ONLY_TRAIN=1 (a second call, after the first measured everything): the step A/Bs alone, then the table
if [[ "${ONLY_TRAIN:-0}" == 1 ]]; then
  note "WMMA fallback tests, lora, CE, ops and CLI benchmarks: skipped (ONLY_TRAIN=1)"; note "total $(elapsed)"
  finish
fi
torch_bench "torch lora" 150 lora --out "$RES"
bench "instill lora" 60 node bench/gpu/instill_bench.mjs lora --out "$RES"
(( NEXT_ON )) && bench "instill lora (next kernels)" 60 env INSTILL_CUDA_NEXT="$NEXT_AB" INSTILL_BENCH_VARIANT="$NEXT_LABEL" \
  node bench/gpu/instill_bench.mjs lora --out "$RES"
bench "instill lora (wmma)" 60 env INSTILL_CUBLASLT=off node bench/gpu/instill_bench.mjs lora --out "$RES"
torch_bench "torch ce" 60 ce --out "$RES"
bench "instill ce" 90 node bench/gpu/instill_bench.mjs ce --out "$RES"
# the loss with the next kernels too: its time and peak memory (the target: <= 1/8 of torch's) under ce_wide and ce_bf16
(( NEXT_ON )) && bench "instill ce (next kernels)" 90 env INSTILL_CUDA_NEXT="$NEXT_AB" INSTILL_BENCH_VARIANT="$NEXT_LABEL" \
  node bench/gpu/instill_bench.mjs ce --out "$RES"
torch_bench "torch ops" 60 ops --out "$RES"
# the ops one by one with the next kernels (the attention backward, the loss, LoRA's products)
(( NEXT_ON )) && bench "instill ops (next kernels)" 90 env INSTILL_CUDA_NEXT="$NEXT_AB" INSTILL_BENCH_VARIANT="$NEXT_LABEL" \
  node bench/gpu/instill_bench.mjs ops --out "$RES"
# compute-sanitizer (memcheck, racecheck, synccheck) on the wgmma kernels where a wgmma piece's tests failed (SANITIZE=1:
# always): the pieces' test shapes (instill_bench.mjs attn --small), with the three pieces on, so that a failure leaves out-of-bounds accesses, shared-memory races and barrier misuse on record for the
# sessions without a GPU (test/cuda/wgmma_probe.test.ts says whether the products themselves read as documented).
# Its time comes from the A/Bs the failed pieces skipped. Each log keeps its first 400 lines (sanitize-TOOL.log).
WG_FAILED=""
for piece in flash_wgmma dq_wgmma dkv_wgmma; do
  [[ ",$FAILED_PIECES," == *",$piece,"* ]] && WG_FAILED="$WG_FAILED,$piece"
done
if [[ -z "$WG_FAILED" && "${SANITIZE:-0}" != 1 ]]; then
  :  # nothing failed: no sanitizer run
elif ! command -v compute-sanitizer > /dev/null 2>&1; then note "compute-sanitizer of the wgmma kernels: no compute-sanitizer on the PATH"
else
  SAN_NEXT="default,flash_wgmma,dq_wgmma,dkv_wgmma"
  for tool in memcheck racecheck synccheck; do
    t=$(step_time "compute-sanitizer $tool" 45) || break
    log="$OUT/sanitize-$tool.log"
    timeout "$t" env INSTILL_CUDA_NEXT="$SAN_NEXT" compute-sanitizer --tool "$tool" --error-exitcode 9 \
      node bench/gpu/instill_bench.mjs attn --small --reps 1 --out /dev/null > "$log.full" 2>&1
    rc=$?
    { head -400 "$log.full"; echo "[... $(wc -l < "$log.full") lines in all; the last 5:]"; tail -5 "$log.full"; } > "$log"
    rm -f "$log.full"
    case $rc in 0) why=clean ;; 9) why="errors found" ;; 124) why="timed out" ;; *) why="the run failed" ;; esac
    note "compute-sanitizer $tool (INSTILL_CUDA_NEXT=$SAN_NEXT): $why (rc=$rc) - $(grep -m1 'ERROR SUMMARY' "$log" | cut -c1-100)"
  done
fi
# Nsight Compute, where the machine's runtime lets it read the counters (device/KINDS.md: Firecracker): each kernel's
# occupancy, issue-slot use, warp stall reasons and pipe use, for the kernel work between GPU runs (stop 16 could only
# read the machine code). --clock-control none: the clocks as the driver sets them. NCU_SETS picks what (none by
# default since stop 33: runs 20 and 21 profiled both sets, and their ~3 minutes go to the A/Bs and the tests):
#   attention: the step's attention kernels (bf16 activations: the forward, dQ and dK/dV kernels, Δ and the dK/dV sum),
#     on warpgroup products where their pieces' tests passed (else the lean kernels)
#   lean: the same with the default's kernels (flash_lean's forward, dQ and dK/dV)
# (`narrow`, stop 28's narrow pieces' kernels, went with those pieces in stop 32: run 21's showed one CTA an SM at
#   12.5% occupancy.)
# SKIP_NCU=1: none.
NCU_SECTIONS=(--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats
  --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis)
# (since stop 32 also the memory tables and the source counters, where this ncu lists them: which loads and stores take
# how many sectors a request and where the warps stall, for run 21's question of where the wgmma kernels' ~2.5x L2
# traffic comes from)
if command -v ncu > /dev/null 2>&1; then
  for sec in MemoryWorkloadAnalysis_Tables SourceCounters; do
    ncu --list-sections 2>/dev/null | grep -qw "$sec" && NCU_SECTIONS+=(--section "$sec")
  done
fi
if [[ "${SKIP_NCU:-0}" == 1 ]]; then note "ncu: skipped (SKIP_NCU=1)"
elif [[ -z "${NCU_SETS:-}" ]]; then note "ncu: none asked (NCU_SETS=\"attention lean\" profiles the attention's kernels)"
elif ! command -v ncu > /dev/null 2>&1; then note "ncu: no ncu on the PATH"
else
  for what in $NCU_SETS; do
    NCU_S=$(step_time "ncu of the $what kernels" 90) || break
    case $what in
      attention)
        NCU_NEXT=default
        for piece in flash_wgmma dq_wgmma dkv_wgmma; do
          [[ "$SWEEP_SKIP" != all && ",$FAILED_PIECES," != *",$piece,"* ]] && NCU_NEXT="$NCU_NEXT,$piece"
        done
        ncu_cmd=(env INSTILL_CUDA_NEXT="$NCU_NEXT" ncu -k 'regex:flash_|attention_delta' --launch-count 5)
        bench_args=(attn --reps 1) ;;
      lean)  # the lean attention kernels (flash_lean; the default before stop 36), to set beside the wgmma ones
        NCU_NEXT=default,-flash_wgmma,-dq_wgmma,-dkv_wgmma
        ncu_cmd=(env INSTILL_CUDA_NEXT="$NCU_NEXT" ncu -k 'regex:flash_|attention_delta' --launch-count 5)
        bench_args=(attn --reps 1) ;;
      *) note "ncu: no set '$what' (NCU_SETS: attention, lean)"; continue ;;
    esac
    note "ncu of the $what kernels: INSTILL_CUDA_NEXT=$NCU_NEXT"
    if timeout "$NCU_S" "${ncu_cmd[@]}" --clock-control none "${NCU_SECTIONS[@]}" \
         node bench/gpu/instill_bench.mjs "${bench_args[@]}" --out /dev/null > "$OUT/ncu-$what.txt" 2>&1; then
      note "ncu of the $what kernels: ok ($(grep -c 'Section: Warp State Statistics' "$OUT/ncu-$what.txt") kernels, ncu-$what.txt)"
    else
      note "ncu of the $what kernels: FAILED or timed out (rc=$?; ncu-$what.txt: $(grep -m1 -iE 'error|fail' "$OUT/ncu-$what.txt" | cut -c1-160))"
    fi
  done
fi
# The fallbacks last (they change rarely): test/cuda again with the WMMA GEMM and the f32 attention kernels
if [[ "${SKIP_WMMA:-0}" == 1 ]]; then note "GPU tests through the WMMA kernel: skipped (SKIP_WMMA=1)"
else  # the verified files and the pieces that go through the GEMM (the attention pieces pick their kernels themselves)
  TEST_PATHS="test/cuda/ops.test.ts test/cuda/lora_reference.test.ts test/cuda/torch.test.ts test/cuda/train_cli.test.ts
    test/cuda/next/residual.test.ts test/cuda/next/attn_pack.test.ts test/cuda/next/dqkv_pack.test.ts
    test/cuda/next/ce_bf16.test.ts test/cuda/next/side_grads.test.ts" \
    gpu_tests "GEMMs through the WMMA kernel, f32 attention kernels" wmma INSTILL_CUBLASLT=off INSTILL_CUDA_ATTENTION=simple
fi
# The user's command on a GPU: a 2-layer 1B-shaped step, through the CLI (exit status and its output kept)
if ! CLI_S=$(step_time "CLI instill bench train --device cuda" 90); then
  :  # skipped, noted by step_time
elif timeout "$CLI_S" node bin/instill.js bench train --config .fixtures/configs/llama-3.2-1b.json --layers 2 \
     --seq 1024 --dtype bf16 --device cuda --profile > "$OUT/cli-bench.log" 2>&1; then
  note "CLI instill bench train --device cuda --dtype bf16 (2 layers, T 1024): ok - $(grep -m1 -E '^instill ' "$OUT/cli-bench.log" | tr -s ' ' | cut -c1-120)"
else
  note "CLI instill bench train --device cuda: FAILED rc=$? (cli-bench.log)"; tail -5 "$OUT/cli-bench.log"
fi
[[ -f "$OUT/bench.log" ]] && tail -20 "$OUT/bench.log"
note "total $(elapsed)"
finish
