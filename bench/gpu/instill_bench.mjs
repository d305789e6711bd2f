// instill's side of bench/gpu-check.sh (GPU machine only; imports the compiled
// dist/, so run `npx tsc -p tsconfig.json` first). Same shapes as torch_bench.py.
//
//   node bench/gpu/instill_bench.mjs lora|ce --out results.jsonl
//   node bench/gpu/instill_bench.mjs train --config llama-3.2-1b.json --out results.jsonl
//
// Timing: wall clock around each call, ended by a device→host copy of a small
// output (which waits for the stream), warm-up first, median of the repeats.
// Activations are f32 in instill's op interface (bf16 in the PyTorch runs),
// frozen weights bf16, LoRA parameters f32 in both. Peak memory: the CUDA
// caching allocator's peak of bytes in use during one call, minus what was in
// use before it (the inputs), like torch.cuda.max_memory_allocated.
import { appendFileSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

import { Tensor, kernels, randomModel, runtime } from '../../dist/src/index.js';
import { loraStepFlops } from '../../dist/src/model/flops.js';
import { native } from '../../dist/src/native.js';

const LORA = { N: 8192, IN: 2048, OUT: 8192, R: 16, scale: 2.0 };
const CE = { N: 8192, C: 2048, V: 128256, ignored: 0.25 };

const args = process.argv.slice(2);
const what = args[0];
const out = args[args.indexOf('--out') + 1];

let state = 12345;
function rand() {  // xorshift32 in [-1, 1)
  state ^= state << 13; state ^= state >>> 17; state ^= state << 5;
  return ((state >>> 0) / 4294967296) * 2 - 1;
}
function randn(n, scale = 1) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rand() * scale;
  return a;
}
// INSTILL_BENCH_VARIANT names an A/B variant that gpu-check.sh selects through the engine's environment
// (e.g. INSTILL_CUDA_ATTENTION=pipelined); it is appended to every impl label.
const variant = process.env.INSTILL_BENCH_VARIANT ? `, ${process.env.INSTILL_BENCH_VARIANT}` : '';
const gemm = (process.env.INSTILL_CUBLASLT === 'off' ? 'wmma' : 'cuBLASLt') + variant;
// --device cpu runs the same script on the CPU (a smoke test of the script itself, not a benchmark).
const device = args.includes('--device') ? args[args.indexOf('--device') + 1] : 'cuda';
const gpu = (data, shape, dtype = 'f32') => Tensor.from(data, shape, { dtype, device });

function emit(rec) {
  const line = JSON.stringify(process.env.INSTILL_BENCH_VARIANT ? { ...rec, variant: process.env.INSTILL_BENCH_VARIANT } : rec);
  console.log(line);
  appendFileSync(out, line + '\n');
}

function timeMs(fn, warmup = 3, repeats = 20) {
  for (let i = 0; i < warmup; i++) fn();
  const t = [];
  for (let i = 0; i < repeats; i++) {
    const a = performance.now();
    fn();
    t.push(performance.now() - a);
  }
  t.sort((x, y) => x - y);
  return { ms: t[Math.floor(t.length / 2)], min_ms: t[0], max_ms: t[t.length - 1] };
}

// GPU throughput of fn: `inner` calls queued back to back, then one wait for the stream (a tiny
// device→host copy on the same stream), per call; median of `repeats` such rounds. Like CUDA events
// around each call (torch_bench.py), this is the device's time, without a host round trip per call.
function timeQueuedMs(fn, sync, warmup = 3, repeats = 10, inner = 10) {
  for (let i = 0; i < warmup; i++) fn();
  sync();
  const t = [];
  for (let r = 0; r < repeats; r++) {
    const a = performance.now();
    for (let i = 0; i < inner; i++) fn();
    sync();
    t.push((performance.now() - a) / inner);
  }
  t.sort((x, y) => x - y);
  return { ms: t[Math.floor(t.length / 2)], min_ms: t[0], max_ms: t[t.length - 1] };
}

// The LoRA linear's forward + backward into preallocated outputs (PyTorch's caching allocator
// reuses its outputs' memory the same way; fresh 256 MB outputs per call would wait for the JS
// garbage collector to hand memory back to instill's allocator).
function loraStep(x, w, a, b, dy, scale) {
  const [N, IN] = x.shape, OUT = w.shape[0], R = a.shape[0];
  const z = (shape) => Tensor.zeros(shape, { device: x.device });
  const y = z([N, OUT]), u = z([N, R]), dx = z([N, IN]), da = z([R, IN]), db = z([OUT, R]);
  return () => {
    kernels.loraLinear({ x, w, a, b, scale, out: { y, u } });
    kernels.loraLinearBackward({ dy, x, w, a, b, u, scale, out: { dx, da, db } });
  };
}

const syncDevice = (device) => () => Tensor.zeros([1], { device }).to('cpu');

// Disposes every tensor (or native handle) among an op's results, and returns nothing. Node frees an unreachable
// tensor's memory only once the event loop turns, and these timing loops never yield: without this, ~100 calls a
// timing of an op that returns 16-64 MB each held the GPU's memory until the script ended (the attention sweep:
// ~50 GB, more than an H100 has).
function drop(result) {
  for (const v of result && typeof result === 'object' ? Object.values(result) : []) {
    if (v && typeof v.dispose === 'function') v.dispose();
  }
}

if (what === 'lora') {
  const { N, IN, OUT, R, scale } = LORA;
  const x = gpu(randn(N * IN), [N, IN]);
  const w = gpu(randn(OUT * IN, 0.02), [OUT, IN], 'bf16');
  const a = gpu(randn(R * IN, 0.02), [R, IN]);
  const b = gpu(randn(OUT * R, 0.02), [OUT, R]);
  const dy = gpu(randn(N * OUT), [N, OUT]);
  const flops = 2 * N * IN * OUT * 2 + 2 * N * R * (IN + OUT) * 3;
  const t = timeQueuedMs(loraStep(x, w, a, b, dy, scale), syncDevice(device));
  emit({ bench: 'lora_linear fwd+bwd', impl: `instill ${device} (${gemm})`, ...t, tflops: flops / t.ms / 1e9, shape: LORA });
} else if (what === 'ce') {
  const { N, C, V, ignored } = CE;
  const h = gpu(randn(N * C), [N, C]);
  const w = gpu(randn(V * C, 0.02), [V, C], 'bf16');
  const tg = new Int32Array(N);
  for (let i = 0; i < N; i++) tg[i] = (rand() + 1) / 2 < ignored ? -100 : Math.floor(((rand() + 1) / 2) * V) % V;
  const targets = Tensor.from(tg, [N], { device });
  const step = () => drop(kernels.linearCrossEntropy({ h, w, targets }));  // returns the loss: synchronous
  step();
  const before = native().deviceMemoryStats(device, true);
  step();
  const after = native().deviceMemoryStats(device);
  const t = timeMs(step, 2, 10);
  emit({ bench: 'linear CE fwd+bwd V=128256', impl: `instill ${device} (chunked, ${gemm})`, ...t,
    peak_mib: (after.peak - before.inUse) / 2 ** 20, shape: CE });
  // one more call with the op profile on: its parts' device times (the logits and dh products, the softmax kernel,
  // under each variant)
  runtime.setOpProfile(true);
  step();
  const parts = runtime.opProfile();
  runtime.setOpProfile(false);
  for (const o of parts) emit({ bench: `linear CE op ${o.op}`, impl: `instill ${device}${variant} x${o.calls}`, ms: o.ms });
} else if (what === 'train') {
  // One LoRA training step (forward, backward, the engine's fused AdamW) of a config with random
  // weights: bf16 frozen weights, f32 LoRA (r 16, alpha 32, all linear layers), B 1 × T 2048 — the
  // same step as torch_bench.py train. FLOPs counted the same way there (MFU vs 989 TFLOP/s dense bf16).
  // --batch B: B rows of 2048 a step (packed; each row its own causal segment), as torch_bench's --batch.
  const cfg = JSON.parse(readFileSync(args[args.indexOf('--config') + 1], 'utf8'));
  const T = 2048, R = 16;
  const B = args.includes('--batch') ? Number(args[args.indexOf('--batch') + 1]) : 1;
  if (!Number.isInteger(B) || B < 1) throw new Error(`--batch: a positive integer, not ${args[args.indexOf('--batch') + 1]}`);
  const benchName = B === 1 ? 'train step llama-3.2-1b seq2048 r16' : `train step llama-3.2-1b ${B}x2048 r16`;
  const t0 = performance.now();
  const model = randomModel(cfg, { dtype: 'bf16', device, seed: 3, init: 'tiled' });
  model.addLora({ r: R, alpha: 32, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] });
  const loadS = (performance.now() - t0) / 1e3;
  const s = model.spec;
  const ids = Array.from({ length: B }, () => Array.from({ length: T }, () => Math.floor(((rand() + 1) / 2) * s.vocabSize) % s.vocabSize));
  const sync = () => Tensor.zeros([1], { device }).to('cpu');  // one stream: waits for all queued work
  const step = async () => {
    await model.lossAndGrads({ inputIds: ids, labels: ids }, { returnGrads: false });
    model.adamwStep({ lr: 1e-4 });
    sync();
  };
  await step();
  const before = native().deviceMemoryStats(device, true);
  const times = [];
  for (let i = 0; i < 9; i++) {
    const a = performance.now();
    await step();
    times.push(performance.now() - a);
  }
  const after = native().deviceMemoryStats(device);
  times.sort((x, y) => x - y);
  const ms = times[4];
  const fwd = [];  // forward only (model.loss): the rest of the step is backward + AdamW
  for (let i = 0; i < 3; i++) {
    const a = performance.now();
    await model.loss({ inputIds: ids, labels: ids });
    fwd.push(performance.now() - a);
  }
  fwd.sort((x, y) => x - y);
  // One more step with the op profiler on: device time per op (CUDA events around each op, nothing
  // waits in between); what the ops do not cover is host work, launches and gaps. Batch 1's rows are
  // "train step op ..." (the table compares them between the A/Bs of one step); a larger batch's are
  // "train step Bx2048 op ...", listed only (where its step's time goes: stop 33 found batch 8 the nearest to 45%).
  {
    const opRow = B === 1 ? 'train step op' : `train step ${B}x2048 op`;
    runtime.setOpProfile(true);
    const pa = performance.now();
    await step();
    const profiledMs = performance.now() - pa;
    const ops = runtime.opProfile();
    runtime.setOpProfile(false);
    let opsMs = 0;
    for (const o of ops) {
      if (!o.op.includes('/')) opsMs += o.ms;  // "op/part" rows are inside their op's row
      emit({ bench: `${opRow} ${o.op}`, impl: `instill ${device}${variant} x${o.calls}`, ms: o.ms, share: o.ms / profiledMs });
    }
    emit({ bench: `${opRow} (none: host, launches, gaps)`, impl: `instill ${device}${variant}`, ms: profiledMs - opsMs, share: 1 - opsMs / profiledMs });
  }
  // FLOPs per token as `instill bench train` and torch_bench.py count them (src/model/flops.ts)
  const { frozenParams: nBase, loraParams: nLora, perToken: flopsTok } = loraStepFlops(s, { rank: R }, T);
  const tokS = (B * T) / (ms / 1e3);
  // INSTILL_BF16_ACTIVATIONS=1: the activations only bf16 products read in bf16 (=mlp: not the attention's; =0: f32;
  // unset: 1 on a GPU, 0 on the CPU, as the model decides).
  const b16 = process.env.INSTILL_BF16_ACTIVATIONS || (device === 'cpu' ? '0' : '1');
  const acts = b16 === '1' ? 'bf16 activations, f32 residual' : b16 === 'mlp' ? 'bf16 norm and MLP activations, f32 others' : 'f32 activations';
  emit({ bench: benchName, impl: `instill ${device} (${acts}, bf16 weights${variant})`, ms,
    min_ms: times[0], max_ms: times[8], tokens_per_s: tokS, peak_mib: after.peak / 2 ** 20,
    step_peak_mib: (after.peak - before.inUse) / 2 ** 20, mfu: (tokS * flopsTok) / 989e12, params_frozen: nBase,
    params_lora: nLora, setup_s: loadS, forward_only_ms: fwd[1] });
} else if (what === 'ops') {
  // Where a llama-3.2-1b step's time goes: each op alone at the step's shapes (T 2048 tokens,
  // C 2048, 32 heads / 8 KV heads of 64, F 8192, r 16, V 128256), fwd+bwd, median of 10.
  const T = 2048, C = 2048, H = 32, KVH = 8, D = 64, F = 8192, R = 16, V = 128256;
  const sync = syncDevice(device);
  const timed = (name, fn, flops = 0) => {
    const t = timeQueuedMs(fn, sync);
    emit({ bench: `op ${name}`, impl: `instill ${device} (${gemm})`, ...t, ...(flops ? { tflops: flops / t.ms / 1e9 } : {}) });
  };
  const q = gpu(randn(T * H * D), [T, H, D]), k = gpu(randn(T * KVH * D), [T, KVH, D]), v = gpu(randn(T * KVH * D), [T, KVH, D]);
  const cu = Tensor.from(Int32Array.of(0, T), [2], { dtype: 'i32', device });
  const { handleOf } = await import('../../dist/src/tensor.js');
  const n = native();
  const fwd = n.opAttention(handleOf(q), handleOf(k), handleOf(v), handleOf(cu), 1 / Math.sqrt(D));
  const dout = gpu(randn(T * H * D), [T, H, D]);
  timed('attention fwd (T 2048, 32/8 heads, D 64)', () => drop(n.opAttention(handleOf(q), handleOf(k), handleOf(v), handleOf(cu), 1 / Math.sqrt(D))));
  timed('attention bwd', () => drop(n.opAttentionBackward(handleOf(dout), handleOf(q), handleOf(k), handleOf(v), fwd.out, fwd.lse, handleOf(cu), 1 / Math.sqrt(D))));
  for (const [nm, IN, OUT] of [['q/o 2048->2048', C, C], ['k/v 2048->512', C, KVH * D], ['gate/up 2048->8192', C, F], ['down 8192->2048', F, C]]) {
    const x = gpu(randn(T * IN), [T, IN]), w = gpu(randn(OUT * IN, 0.02), [OUT, IN], 'bf16');
    const a = gpu(randn(R * IN, 0.02), [R, IN]), b = gpu(randn(OUT * R, 0.02), [OUT, R]), dy = gpu(randn(T * OUT), [T, OUT]);
    const step = loraStep(x, w, a, b, dy, 2);
    const t = timeQueuedMs(step, sync);
    emit({ bench: `op lora_linear fwd+bwd ${nm}`, impl: `instill ${device} (${gemm})`, ...t, tflops: (6 * T * IN * OUT) / t.ms / 1e9 });
  }
  const h = gpu(randn(T * C), [T, C]), wv = gpu(randn(V * C, 0.02), [V, C], 'bf16');
  const tg = Tensor.from(Int32Array.from({ length: T }, (_, i) => (i * 7919) % V), [T], { device });
  timed('linear CE fwd+bwd (T 2048, V 128256)', () => drop(kernels.linearCrossEntropy({ h, w: wv, targets: tg })));
  const skipped = (process.env.INSTILL_BENCH_SKIP_PIECES || '').split(',');
  // INSTILL_CUDA_NEXT=pdl (stop 30) at the kernel level: a chain of the 1B step's elementwise kernels, each reading what
  // the one before wrote (rmsnorm of (T, C), SwiGLU and its backward on it: 40 rounds, 120 launches), queued behind
  // two products of 8192³ (~3.5 ms on an H100) so that the host is ahead and every kernel is queued before the one
  // ahead of it finishes; with and without the piece, alternating, in this one process (the variable is read at every
  // launch). What a call with the piece saves, over the chain's 120 kernel boundaries, is what a programmatic launch
  // saves at one (on compute capability 9.0; elsewhere the two are the same launches). Left out where pdl's tests failed.
  if (!skipped.includes('pdl') && !skipped.includes('all') && process.env.INSTILL_CUDA_NEXT === undefined) {
    const x0 = gpu(randn(T * C), [T, C]), w = gpu(randn(C), [C]);
    const z = device === 'cpu' ? null : gpu(new Float32Array(8192 * 8192), [8192, 8192], 'bf16');
    const counts = () => (device === 'cpu' ? { programmatic: 0, pdl: 'cpu' } : n.deviceLaunchCounts(device));
    const programmatic = () => counts().programmatic;
    const rounds = 40, boundaries = 3 * rounds;
    const chain = () => {
      if (device !== 'cpu') drop([kernels.matmul({ a: z, b: z }), kernels.matmul({ a: z, b: z })]);  // (--device cpu: a smoke test)
      let x = handleOf(x0);
      for (let k = 0; k < rounds; k++) {
        const { y, rstd } = n.opRmsnorm(x, handleOf(w), 1e-5);
        const s = n.opSwiglu(y, y);
        const { dgate, dup } = n.opSwigluBackward(s, y, y);
        for (const t of [y, rstd, s, dgate]) t.dispose();
        if (k > 0) x.dispose();
        x = dup;
      }
      x.dispose();
    };
    const sets = ['default', 'default,pdl'];
    const runs = Object.fromEntries(sets.map((v) => [v, []]));
    const count = { default: 0, 'default,pdl': 0 }, state = {};
    try {
      for (let rep = 0; rep < 5; rep++) {
        for (const next of sets) {
          process.env.INSTILL_CUDA_NEXT = next;
          const c0 = programmatic();
          runs[next].push(timeQueuedMs(chain, sync, 1, 3, 2).ms);
          count[next] += programmatic() - c0;
          state[next] = counts().pdl;  // ('on', or why programmatic launches were not made)
        }
      }
    } finally {
      delete process.env.INSTILL_CUDA_NEXT;
    }
    const med = (a) => [...a].sort((p, q) => p - q)[Math.floor(a.length / 2)];
    for (const next of sets) {
      const ms = [...runs[next]].sort((p, q) => p - q);
      emit({ bench: `op kernel chain behind 2 products (rmsnorm, swiglu, swiglu bwd; T 2048, C 2048) [${next}]`,
        impl: `instill ${device} (${gemm})`, ms: med(ms), min_ms: ms[0], max_ms: ms[ms.length - 1], programmatic_launches: count[next],
        pdl: state[next], boundaries, us_saved_per_boundary: next === 'default' ? 0 : (1000 * (med(runs.default) - med(ms))) / boundaries });
    }
    drop({ x0, w, z });  // (before the attention sweep's buffers)
  }
  if (process.env.INSTILL_CUDA_ATTENTION === undefined && process.env.INSTILL_CUDA_NEXT === undefined &&
      process.env.INSTILL_BENCH_SKIP_PIECES !== 'all') {
    // Last (a kernel that faults poisons the process's CUDA context): the attention's kernels one set at a time
    // (INSTILL_CUDA_NEXT and INSTILL_CUDA_ATTENTION are read on every call): each kind of forward (synchronous f32
    // tiles, pipelined bf16 copies) and the backward (on f32 inputs, and on bf16 ones as the step's bf16
    // activations), with the attention pieces that wait for a GPU run alone and combined, so one call ranks them at
    // the kernel level (the step A/Bs time only the whole step). Runs 14-16 ranked flash_occ, flash_mt, stored_ds
    // and attn_prep (each lost to flash_lean alone; taken out in stop 22), run 17 dq_atomic, dkv_atomic, dkv_pairs and
    // dkv_whole (taken out in stop 23); stop 26's flash_wgmma, dq_wgmma and dkv_wgmma (the forward, dQ and dK/dV
    // kernels on Hopper's warpgroup products; stop 34: on swizzled tiles, without transposed copies) were promoted in
    // stop 36: the sweep now sets the default against the lean kernels (each wgmma piece left out, then all three). Sets
    // naming a piece in INSTILL_BENCH_SKIP_PIECES (gpu-check.sh:
    // those whose tests failed; "all": no sweep) are left out; one that fails here (an error) is reported and the
    // others still run.
    const skip = (process.env.INSTILL_BENCH_SKIP_PIECES || '').split(',').filter(Boolean);
    const sweep = ['', 'default', 'default,-flash_wgmma', 'default,-dq_wgmma', 'default,-dkv_wgmma',
      'default,-flash_wgmma,-dq_wgmma,-dkv_wgmma']
      .filter((set) => !set.split(',').some((piece) => skip.includes(piece.replace(/^-/, ''))));
    const scale = 1 / Math.sqrt(D);
    const q16 = gpu(randn(T * H * D), [T, H, D], 'bf16'), k16 = gpu(randn(T * KVH * D), [T, KVH, D], 'bf16');
    const v16 = gpu(randn(T * KVH * D), [T, KVH, D], 'bf16'), dout16 = gpu(randn(T * H * D), [T, H, D], 'bf16');
    for (const next of sweep) {
      const label = next ? `next ${next}` : 'verified';
      try {
        process.env.INSTILL_CUDA_NEXT = next || 'none';  // 'none': the verified kernels, whatever is promoted
        for (const [kind, mode] of [['synchronous', 'flash'], ['pipelined', 'pipelined']]) {
          process.env.INSTILL_CUDA_ATTENTION = mode;
          timed(`attention fwd, ${kind} [${label}]`, () => drop(n.opAttention(handleOf(q), handleOf(k), handleOf(v), handleOf(cu), scale)));
        }
        process.env.INSTILL_CUDA_ATTENTION = 'pipelined';
        const f = n.opAttention(handleOf(q), handleOf(k), handleOf(v), handleOf(cu), scale);
        timed(`attention bwd, pipelined [${label}]`, () => drop(n.opAttentionBackward(handleOf(dout), handleOf(q), handleOf(k), handleOf(v), f.out, f.lse, handleOf(cu), scale)));
        drop(f);
        delete process.env.INSTILL_CUDA_ATTENTION;  // bf16 tensors: the flash kernels on them (no copies)
        timed(`attention fwd, bf16 activations [${label}]`, () => drop(n.opAttention(handleOf(q16), handleOf(k16), handleOf(v16), handleOf(cu), scale)));
        const f16 = n.opAttention(handleOf(q16), handleOf(k16), handleOf(v16), handleOf(cu), scale);
        timed(`attention bwd, bf16 activations [${label}]`, () => drop(n.opAttentionBackward(handleOf(dout16), handleOf(q16), handleOf(k16), handleOf(v16), f16.out, f16.lse, handleOf(cu), scale)));
        drop(f16);
      } catch (e) {
        console.error(`attention sweep, ${label}: ${e.message}`);
      } finally {
        delete process.env.INSTILL_CUDA_ATTENTION;
        delete process.env.INSTILL_CUDA_NEXT;
      }
    }
  }
} else if (what === 'attn') {
  // For a profiler or checker (gpu-check.sh runs it under ncu, and under compute-sanitizer where a wgmma piece's tests
  // failed): the 1B step's attention on bf16 activations (T 2048, 32/8 heads of 64, one causal segment), forward and
  // backward, --reps times (default 2: a warm-up, then the one profiled), with the kernels INSTILL_CUDA_NEXT names.
  // --small: instead, the wgmma pieces' test shapes (test/cuda/common.ts's WGMMA_ATTENTION_CASES: segments, windows
  // whose first visible key is no multiple of 64, GQA, D 128), each on bf16 activations and on f32 inputs (the
  // kernels' bf16 copies), small enough for a sanitizer's instrumented kernels. No timing of its own.
  const reps = args.includes('--reps') ? Number(args[args.indexOf('--reps') + 1]) : 2;
  const { handleOf } = await import('../../dist/src/tensor.js');
  const n = native();
  const cases = args.includes('--small')
    ? [{ segs: [0, 13, 50, 51, 90], H: 4, KVH: 2, D: 64, window: 0 }, { segs: [0, 1, 200, 333], H: 4, KVH: 1, D: 64, window: 40 },
      { segs: [0, 300, 701], H: 4, KVH: 2, D: 64, window: 0 }, { segs: [0, 150, 300], H: 8, KVH: 2, D: 128, window: 0 }]
    : [{ segs: [0, 2048], H: 32, KVH: 8, D: 64, window: 0 }];
  const dtypes = args.includes('--small') ? ['bf16', 'f32'] : ['bf16'];
  for (const { segs, H, KVH, D, window } of cases) {
    const T = segs[segs.length - 1], scale = 1 / Math.sqrt(D);
    const cu = Tensor.from(Int32Array.from(segs), [segs.length], { dtype: 'i32', device });
    for (const dtype of dtypes) {
      const q = gpu(randn(T * H * D), [T, H, D], dtype), k = gpu(randn(T * KVH * D), [T, KVH, D], dtype);
      const v = gpu(randn(T * KVH * D), [T, KVH, D], dtype), dout = gpu(randn(T * H * D), [T, H, D], dtype);
      for (let i = 0; i < reps; i++) {
        const f = n.opAttention(handleOf(q), handleOf(k), handleOf(v), handleOf(cu), scale, window);
        drop(n.opAttentionBackward(handleOf(dout), handleOf(q), handleOf(k), handleOf(v), f.out, f.lse, handleOf(cu), scale, window));
        drop(f);
      }
      syncDevice(device)();
      console.log(`attention fwd+bwd x${reps} (T ${T} in ${segs.length - 1} segments, ${H}/${KVH} heads, D ${D}, window ${window}, ${dtype}): done`);
    }
  }
} else {
  console.error('usage: node bench/gpu/instill_bench.mjs lora|ce|train|ops|attn [--config FILE] --out results.jsonl');
  process.exit(2);
}
