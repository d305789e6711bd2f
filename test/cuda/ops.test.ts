// Every CUDA op against the CPU backend on the same random inputs (awkward
// sizes, poisoned outputs), run only where runtime.info().devices has 'cuda'
// (a build with INSTILL_CUDA=on on a machine with a GPU: bench/gpu-check.sh).
// Elsewhere the whole file is skipped with the reason. The verified kernels here;
// the next pieces (INSTILL_CUDA_NEXT) in test/cuda/next/, a file each (common.ts says why);
// tolerances in common.ts.
import { describe, expect, it } from 'vitest';

import { Tensor, kernels, runtime } from '../../src/index.js';
import { native } from '../../src/native.js';
import { handleOf } from '../../src/tensor.js';
import { randn, rng, roundBf16, seed } from '../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../helpers/kernels.js';
import { withEnv } from '../helpers/env.js';
import { withOpProfile } from '../helpers/profile.js';
import {
  ATTENTION_BF16_CASES, BF16_TOL, F32_TOL, LORA_BF16_CASES, LORA_CASES, RESIDUAL_CASES, attentionBf16, attentionInputs, attentionLayout, close,
  expectBits, hasCuda, host, loraBf16, loraForwardBackward, loraResidual, pair, ropeBf16,
} from './common.js';

describe.skipIf(!hasCuda)('CUDA backend vs CPU backend', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  it('runtime.info().cuda says which GPU: a name, compute capability 8.0 or newer, its multiprocessors and memory', () => {
    const gpu = runtime.info().cuda;
    expect(gpu, 'info().cuda where devices has cuda').toBeDefined();
    console.log(`GPU: ${gpu?.name}, compute capability ${gpu?.computeCapability}, ${gpu?.multiprocessors} SMs, ${((gpu?.memoryBytes ?? 0) / 2 ** 30).toFixed(1)} GiB`);
    expect(Number(gpu?.computeCapability)).toBeGreaterThanOrEqual(8);
    expect(gpu?.multiprocessors).toBeGreaterThan(0);
    expect(gpu?.memoryBytes).toBeGreaterThan(2 ** 30);
  });

  it('runtime.info().cuda.gemm says what runs the products: cuBLASLt where INSTILL_CUBLASLT names it, the WMMA kernel and why where it is off', () => {
    const gemm = runtime.info().cuda!.gemm;
    console.log(`matrix products: ${gemm}`);
    const env = process.env.INSTILL_CUBLASLT;
    if (env === 'off') expect(gemm).toMatch(/^instill's WMMA kernel: cuBLASLt not used \(disabled by INSTILL_CUBLASLT=off\); .*INSTILL_CUBLASLT=/);
    else if (env) expect(gemm).toBe(`cuBLASLt (${env})`);  // (bench/gpu-check.sh names the one it found)
    else expect(gemm).toMatch(/^(cuBLASLt \(\S*libcublasLt\.so\.1[23]\)|instill's WMMA kernel: cuBLASLt not used \(.*libcublasLt\.so\.13)/);
  });

  it('runtime.deviceMemory counts live and cached bytes; releaseDeviceMemory gives the cached ones back, live tensors keep theirs', () => {
    runtime.releaseDeviceMemory('cuda');
    const base = runtime.deviceMemory('cuda', { resetPeak: true });
    expect(base.reserved).toBe(base.inUse);  // nothing cached after a release
    const mib = 2 ** 20;
    const kept = Tensor.zeros([16 * mib / 4], { device: 'cuda' });
    const freed = Tensor.zeros([64 * mib / 4], { device: 'cuda' });
    expect(runtime.deviceMemory('cuda').inUse - base.inUse).toBe(80 * mib);
    freed.dispose();
    const after = runtime.deviceMemory('cuda');
    expect(after.inUse - base.inUse).toBe(16 * mib);
    expect(after.peak - base.inUse).toBe(80 * mib);
    expect(after.reserved - after.inUse).toBe(64 * mib);  // the freed block, cached for reuse
    expect(runtime.releaseDeviceMemory('cuda')).toBe(64 * mib);
    const released = runtime.deviceMemory('cuda');
    expect(released.reserved).toBe(released.inUse);
    expect(released.inUse - base.inUse).toBe(16 * mib);
    expect(kept.to('cpu').toArray().every((x) => x === 0)).toBe(true);  // the live tensor is untouched
    expect(runtime.releaseDeviceMemory('cuda')).toBe(0);
    kept.dispose();
  });

  it('tensors move to the GPU and back unchanged (f32, bf16, i32); zeros', () => {
    const x = randn(r, 1000);
    for (const dtype of ['f32', 'bf16'] as const) {
      const t = Tensor.from(x, [10, 100], { dtype });
      const g = t.to('cuda');
      expect(g.device).toBe('cuda');
      expect(g.shape).toEqual([10, 100]);
      expect(g.to('cuda')).toBe(g);
      expect(Array.from(g.to('cpu').toArray())).toEqual(Array.from(t.toArray()));
    }
    const ids = Int32Array.from({ length: 77 }, (_, i) => i * 7 - 100);
    expect(Array.from(Tensor.from(ids, [77], { device: 'cuda' }).to('cpu').toArray())).toEqual(Array.from(ids));
    expect(Array.from(Tensor.zeros([3, 5], { device: 'cuda' }).to('cpu').toArray())).toEqual(new Array(15).fill(0));
  });

  it('dispose() gives a GPU tensor\'s memory back to the allocator at once; a disposed input is E_ARG', () => {
    const stats = () => native().deviceMemoryStats('cuda').inUse;
    const t = Tensor.zeros([1024, 1024], { device: 'cuda' });
    const held = stats();
    t.dispose();
    expect(held - stats()).toBeGreaterThanOrEqual(4 << 20);
    expect(() => kernels.matmul({ a: t, b: Tensor.zeros([1024, 2], { device: 'cuda' }) })).toThrow(/disposed/);
  });

  it('errors: toArray on a GPU tensor, mixed devices, out-of-range targets and ids', () => {
    const g = Tensor.from(new Float32Array(6), [2, 3], { device: 'cuda' });
    expect(() => g.toArray()).toThrow(expect.objectContaining({ code: 'E_DEVICE' }));
    const c = Tensor.from(new Float32Array(12), [3, 4]);
    expect(() => kernels.matmul({ a: g, b: c })).toThrow(expect.objectContaining({ code: 'E_DEVICE' }));
    const logits = Tensor.from(randn(r, 4 * 9), [4, 9], { device: 'cuda' });
    const bad = Tensor.from(Int32Array.from([1, 9, -100, 2]), [4], { device: 'cuda' });
    expect(() => kernels.maskedCrossEntropy({ logits, targets: bad })).toThrow(expect.objectContaining({ code: 'E_RANGE' }));
    const w = Tensor.from(randn(r, 9 * 5), [9, 5], { device: 'cuda' });
    expect(() => native().opEmbedding(handleOf(bad), handleOf(w))).toThrow(expect.objectContaining({ code: 'E_RANGE' }));
  });

  it.each([
    { m: 37, k: 123, n: 77, ta: false, tb: false },
    { m: 37, k: 123, n: 77, ta: true, tb: false },
    { m: 130, k: 5, n: 65, ta: false, tb: true },
    { m: 1, k: 1, n: 1, ta: true, tb: true },
    { m: 257, k: 300, n: 129, ta: false, tb: true },
  ])('matmul $m×$k×$n transA=$ta transB=$tb (b f32 and bf16)', ({ m, k, n, ta, tb }) => {
    const a = pair(randn(r, m * k), ta ? [k, m] : [m, k]);
    for (const dt of ['f32', 'bf16'] as const) {
      const b = pair(randn(r, k * n), tb ? [n, k] : [k, n], dt);
      const ref = kernels.matmul({ a: a.cpu, b: b.cpu, transA: ta, transB: tb });
      const got = kernels.matmul({ a: a.gpu, b: b.gpu, transA: ta, transB: tb });
      expect(got.device).toBe('cuda');
      close(host(got), ref.toArray(), BF16_TOL, `matmul ${dt}`);
    }
  });

  it.each(LORA_CASES)('loraLinear forward + backward N=$n $inF→$outF r=$rank bias=$bias (w bf16, kernels: verified)', (c) => loraForwardBackward(r, c));

  it.each(LORA_BF16_CASES)('loraLinear with bf16 x, y, dy, dx N=$n $inF→$outF r=$rank bias=$bias (kernels: verified)', (c) => loraBf16(r, c));

  it.each(RESIDUAL_CASES)('loraLinear with a residual N=$n $inF→$outF r=$rank bias=$bias (kernels: verified)', (c) => loraResidual(r, c, 'verified'));

  it('maskedCrossEntropy: loss and dlogits, ignored rows, logits of magnitude 1e4, all ignored', () => {
    const n = 37, v = 1001;
    const logits = randn(r, n * v, 5);
    logits[3 * v + 7] = 1e4;
    const t = Int32Array.from({ length: n }, (_, i) => (i % 4 === 1 ? -100 : Math.floor(r() * v)));
    const L = pair(logits, [n, v]), T = pair(t, [n]);
    const ref = kernels.maskedCrossEntropy({ logits: L.cpu, targets: T.cpu });
    const got = kernels.maskedCrossEntropy({ logits: L.gpu, targets: T.gpu });
    expect(got.count).toBe(ref.count);
    expect(Math.abs(got.loss - ref.loss) / Math.abs(ref.loss)).toBeLessThan(1e-5);
    close(host(got.dlogits), ref.dlogits!.toArray(), F32_TOL, 'dlogits');
    const none = pair(new Int32Array(n).fill(-100), [n]);
    const z = kernels.maskedCrossEntropy({ logits: L.gpu, targets: none.gpu });
    expect(z.loss).toBe(0);
    expect(z.count).toBe(0);
    expect(Math.max(...Array.from(host(z.dlogits)).map(Math.abs))).toBe(0);
  });

  it.each([{ chunkRows: 7 }, { chunkRows: 0 }])('linearCrossEntropy (w bf16, dW too, chunkRows $chunkRows)', ({ chunkRows }) => {
    const n = 45, c = 67, v = 1003;
    const h = pair(randn(r, n * c), [n, c]);
    const w = pair(randn(r, v * c, 0.2), [v, c], 'bf16');
    const t = Int32Array.from({ length: n }, (_, i) => (i % 3 === 0 ? -100 : Math.floor(r() * v)));
    const T = pair(t, [n]);
    const ref = kernels.linearCrossEntropy({ h: h.cpu, w: w.cpu, targets: T.cpu, needWeightGrad: true, normalizer: 50 });
    const got = kernels.linearCrossEntropy({ h: h.gpu, w: w.gpu, targets: T.gpu, needWeightGrad: true, normalizer: 50, chunkRows });
    expect(got.count).toBe(ref.count);
    expect(Math.abs(got.loss - ref.loss) / Math.abs(ref.loss)).toBeLessThan(BF16_TOL);
    close(host(got.dh), ref.dh!.toArray(), BF16_TOL, 'dh');
    close(host(got.dw), ref.dw!.toArray(), BF16_TOL, 'dw');
  });

  it('embedding forward + backward (bf16 table, repeated ids)', () => {
    const n = 53, c = 37, v = 19;
    const ids = pair(Int32Array.from({ length: n }, () => Math.floor(r() * v)), [n]);
    const w = pair(randn(r, v * c), [v, c], 'bf16');
    const A = native();
    close(host(A.opEmbedding(handleOf(ids.gpu), handleOf(w.gpu))), A.opEmbedding(handleOf(ids.cpu), handleOf(w.cpu)).toArray(), F32_TOL, 'out');
    const dout = pair(randn(r, n * c), [n, c]);
    close(host(A.opEmbeddingBackward(handleOf(dout.gpu), handleOf(ids.gpu), v)),
      A.opEmbeddingBackward(handleOf(dout.cpu), handleOf(ids.cpu), v).toArray(), F32_TOL, 'dw');
  });

  it.each([{ n: 37, c: 123 }, { n: 3, c: 4099 }, { n: 29, c: 2052 }])('rmsnorm forward + backward $n×$c', ({ n, c }) => {
    const A = native();
    const x = pair(randn(r, n * c, 3), [n, c]), w = pair(randn(r, c), [c]), dy = pair(randn(r, n * c), [n, c]);
    const ref = A.opRmsnorm(handleOf(x.cpu), handleOf(w.cpu), 1e-5), got = A.opRmsnorm(handleOf(x.gpu), handleOf(w.gpu), 1e-5);
    close(host(got.y), ref.y.toArray(), F32_TOL, 'y');
    close(host(got.rstd), ref.rstd.toArray(), F32_TOL, 'rstd');
    const refB = A.opRmsnormBackward(handleOf(dy.cpu), handleOf(x.cpu), handleOf(w.cpu), ref.rstd);
    const gotB = A.opRmsnormBackward(handleOf(dy.gpu), handleOf(x.gpu), handleOf(w.gpu), got.rstd);
    close(host(gotB.dx), refB.dx.toArray(), F32_TOL, 'dx');
    close(host(gotB.dw), refB.dw.toArray(), F32_TOL, 'dw');
    // a bf16 y (bf16 activations): the f32 y rounded once, so within one bf16 step of the CPU's bf16 y, and
    // the GPU's own f32 y rounded (c = 4099 and 123 take the scalar kernel, 2052 the vector one)
    const got16 = A.opRmsnorm(handleOf(x.gpu), handleOf(w.gpu), 1e-5, 'bf16');
    expect(got16.y.dtype).toBe('bf16');
    close(host(got16.y), A.opRmsnorm(handleOf(x.cpu), handleOf(w.cpu), 1e-5, 'bf16').y.toArray(), 8e-3, 'y (bf16)');
    const own = roundBf16(host(got.y) as Float32Array);
    expect(Buffer.from((host(got16.y) as Float32Array).buffer).equals(Buffer.from(own.buffer)), 'y (bf16) = y rounded').toBe(true);
  });

  it('rope forward + backward (positions restarting per example, large positions)', () => {
    const A = native();
    const n = 29, h = 3, d = 10;
    const x = pair(randn(r, n * h * d), [n, h, d]);
    const pos = pair(Int32Array.from({ length: n }, (_, i) => (i < 11 ? i : i < 20 ? i - 11 : 5000 + i)), [n]);
    const inv = pair(Float32Array.from({ length: d / 2 }, (_, i) => 10000 ** (-(2 * i) / d)), [d / 2]);
    for (const backward of [false, true]) {
      close(host(A.opRope(handleOf(x.gpu), handleOf(pos.gpu), handleOf(inv.gpu), backward)),
        A.opRope(handleOf(x.cpu), handleOf(pos.cpu), handleOf(inv.cpu), backward).toArray(), F32_TOL, `rope backward=${backward}`);
    }
  });

  it('swiglu forward + backward (gates up to ±100)', () => {
    const A = native();
    const n = 31, f = 77;
    const g = pair(randn(r, n * f, 100), [n, f]), u = pair(randn(r, n * f), [n, f]), d = pair(randn(r, n * f), [n, f]);
    close(host(A.opSwiglu(handleOf(g.gpu), handleOf(u.gpu))), A.opSwiglu(handleOf(g.cpu), handleOf(u.cpu)).toArray(), F32_TOL, 'out');
    const refB = A.opSwigluBackward(handleOf(d.cpu), handleOf(g.cpu), handleOf(u.cpu));
    const gotB = A.opSwigluBackward(handleOf(d.gpu), handleOf(g.gpu), handleOf(u.gpu));
    close(host(gotB.dgate), refB.dgate.toArray(), F32_TOL, 'dgate');
    close(host(gotB.dup), refB.dup.toArray(), F32_TOL, 'dup');
    // every tensor bf16 (the model's MLP on a GPU): f32 math, each output rounded once, so the two backends
    // differ by at most one bf16 step of an element (2^-8 of the largest), and the vector kernel (8 a
    // thread) and the scalar tail both run (31 x 77 is not a multiple of 8)
    const g16 = pair(randn(r, n * f, 10), [n, f], 'bf16'), u16 = pair(randn(r, n * f), [n, f], 'bf16'), d16 = pair(randn(r, n * f), [n, f], 'bf16');
    const out16 = A.opSwiglu(handleOf(g16.gpu), handleOf(u16.gpu));
    expect(out16.dtype).toBe('bf16');
    close(host(out16), A.opSwiglu(handleOf(g16.cpu), handleOf(u16.cpu)).toArray(), 8e-3, 'out (bf16)');
    const refB16 = A.opSwigluBackward(handleOf(d16.cpu), handleOf(g16.cpu), handleOf(u16.cpu));
    const gotB16 = A.opSwigluBackward(handleOf(d16.gpu), handleOf(g16.gpu), handleOf(u16.gpu));
    close(host(gotB16.dgate), refB16.dgate.toArray(), 8e-3, 'dgate (bf16)');
    close(host(gotB16.dup), refB16.dup.toArray(), 8e-3, 'dup (bf16)');
  });

  it('adamw: three steps with weight decay, the third with a gradient scale (clipping)', () => {
    const A = native();
    const n = 70001;  // three of the kernel's 32768-element chunks, the last partial
    const p = pair(randn(r, n), [n]), m = pair(new Float32Array(n), [n]), v = pair(new Float32Array(n), [n]);
    for (let t = 1; t <= 3; t++) {
      const g = pair(randn(r, n), [n]);
      for (const s of [{ p: p.cpu, g: g.cpu, m: m.cpu, v: v.cpu }, { p: p.gpu, g: g.gpu, m: m.gpu, v: v.gpu }]) {
        A.opAdamw(handleOf(s.p), handleOf(s.g), handleOf(s.m), handleOf(s.v), 1e-2, 0.9, 0.95, 1e-8, 0.1, t, t === 3 ? 0.3 : 1);
      }
    }
    close(host(p.gpu), p.cpu.toArray(), 1e-6, 'param');
    close(host(m.gpu), m.cpu.toArray(), 1e-6, 'm');
    close(host(v.gpu), v.cpu.toArray(), 1e-6, 'v');
  });

  it('sum_squares: several tensors over several chunks, deterministic', () => {
    const A = native();
    const sizes = [70001, 0, 131077, 37];
    const ts = sizes.map((n) => pair(randn(r, n), [n]));
    const cpu = A.opSumSquares(ts.map((t) => handleOf(t.cpu)));
    const gpu = A.opSumSquares(ts.map((t) => handleOf(t.gpu)));
    expect(Math.abs(gpu - cpu) / cpu).toBeLessThan(1e-12);
    expect(A.opSumSquares(ts.map((t) => handleOf(t.gpu)))).toBe(gpu);
  });

  it.each([
    { segs: [0, 13, 50, 51, 90], h: 4, kvh: 2, d: 64, window: 0 },
    { segs: [0, 70], h: 6, kvh: 1, d: 37, window: 0 },
    { segs: [0, 33, 99], h: 2, kvh: 2, d: 128, window: 5 },
    { segs: [0, 1, 200, 333], h: 4, kvh: 2, d: 64, window: 40 },
    { segs: [0, 150, 300], h: 8, kvh: 2, d: 128, window: 0 },
  ])('attention forward + backward: packed $segs, H=$h KVH=$kvh D=$d window=$window', ({ segs, h, kvh, d, window }) => {
    const A = native();
    const { q, k, v, dout, cu, scale } = attentionInputs(r, segs, h, kvh, d);
    const ref = A.opAttention(handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), handleOf(cu.cpu), scale, window);
    const got = A.opAttention(handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), handleOf(cu.gpu), scale, window);
    // D 64 / 128 run on the tensor cores (bf16 operands) unless INSTILL_CUDA_ATTENTION=simple
    const tol = (d === 64 || d === 128) && process.env.INSTILL_CUDA_ATTENTION !== 'simple' ? BF16_TOL : F32_TOL;
    close(host(got.out), ref.out.toArray(), tol, 'out', attentionLayout('out', segs, h, kvh, d));
    close(host(got.lse), ref.lse.toArray(), tol, 'lse', attentionLayout('lse', segs, h, kvh, d));
    const refB = A.opAttentionBackward(handleOf(dout.cpu), handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), ref.out, ref.lse, handleOf(cu.cpu), scale, window);
    const gotB = A.opAttentionBackward(handleOf(dout.gpu), handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), got.out, got.lse, handleOf(cu.gpu), scale, window);
    close(host(gotB.dq), refB.dq.toArray(), tol, 'dq', attentionLayout('dq', segs, h, kvh, d));
    close(host(gotB.dk), refB.dk.toArray(), tol, 'dk', attentionLayout('dk', segs, h, kvh, d));
    close(host(gotB.dv), refB.dv.toArray(), tol, 'dv', attentionLayout('dv', segs, h, kvh, d));
    // cu_seqlens may stay on the host (as the model passes it): the same bits
    const hostCu = A.opAttention(handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), handleOf(cu.cpu), scale, window);
    expect(Array.from(host(hostCu.out))).toEqual(Array.from(host(got.out)));
  });

  it.each([
    { segs: [0, 13, 50, 51, 90], h: 4, kvh: 2, d: 64, window: 0, cpu: true },
    { segs: [0, 1, 200, 333], h: 4, kvh: 2, d: 64, window: 40, cpu: true },
    { segs: [0, 97, 611], h: 2, kvh: 2, d: 128, window: 0, cpu: true },
    { segs: [0, 150, 300], h: 8, kvh: 2, d: 128, window: 7, cpu: true },
    // 68 key blocks × 8 KV heads: the dK/dV kernel loops over both query heads of a group (no split)
    { segs: [0, 2500, 4300], h: 16, kvh: 8, d: 64, window: 0, cpu: false },
  ])('flash attention, the verified kernels (INSTILL_CUDA_NEXT=none): synchronous / pipelined (cp.async tiles) / default (mixed): the same bits, $segs H=$h KVH=$kvh D=$d window=$window', ({ segs, h, kvh, d, window, cpu }) => {
    const A = native();
    const { q, k, v, dout, cu, scale } = attentionInputs(r, segs, h, kvh, d);
    // (the promoted flash_lean kernels' own modes: test/cuda/next/flash_lean.test.ts)
    const run = (mode: string | undefined) => withEnv('INSTILL_CUDA_NEXT', 'none', () => withEnv('INSTILL_CUDA_ATTENTION', mode, () => {  // read on every call
      const f = A.opAttention(handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), handleOf(cu.cpu), scale, window);
      const b = A.opAttentionBackward(handleOf(dout.gpu), handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), f.out, f.lse, handleOf(cu.cpu), scale, window);
      return { out: host(f.out), lse: host(f.lse), dq: host(b.dq), dk: host(b.dk), dv: host(b.dv) };
    }));
    // Each path's op-profile parts show which kernels ran (the pipelined ones make bf16 copies).
    const profiled = (mode: string | undefined) => {
      const { value: got, parts } = withOpProfile(() => run(mode));
      return { got, parts };
    };
    const flash = profiled('flash'), piped = profiled('pipelined'), dflt = profiled(undefined);
    const fwdCopies = 'attention_forward/bf16 copies of k, v', bwdCopies = 'attention_backward/bf16 copies of q, k, v, dO';
    expect(flash.parts).not.toContain(fwdCopies);
    expect(flash.parts).not.toContain(bwdCopies);
    expect(piped.parts).toContain(fwdCopies);
    expect(piped.parts).toContain(bwdCopies);
    expect(dflt.parts).not.toContain(fwdCopies);  // the default: forward synchronous, backward pipelined
    expect(dflt.parts).toContain(bwdCopies);
    for (const key of ['out', 'lse', 'dq', 'dk', 'dv'] as const) {
      expect(piped.got[key].every((x) => Number.isFinite(x)), key).toBe(true);
      expectBits(piped.got[key], flash.got[key], `${key}: pipelined against synchronous`, attentionLayout(key, segs, h, kvh, d));
      expectBits(dflt.got[key], flash.got[key], `${key}: default against synchronous`, attentionLayout(key, segs, h, kvh, d));
    }
    if (!cpu) return;
    const ref = A.opAttention(handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), handleOf(cu.cpu), scale, window);
    const refB = A.opAttentionBackward(handleOf(dout.cpu), handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), ref.out, ref.lse, handleOf(cu.cpu), scale, window);
    close(piped.got.out, ref.out.toArray(), BF16_TOL, 'out', attentionLayout('out', segs, h, kvh, d));
    close(piped.got.dq, refB.dq.toArray(), BF16_TOL, 'dq', attentionLayout('dq', segs, h, kvh, d));
    close(piped.got.dk, refB.dk.toArray(), BF16_TOL, 'dk', attentionLayout('dk', segs, h, kvh, d));
    close(piped.got.dv, refB.dv.toArray(), BF16_TOL, 'dv', attentionLayout('dv', segs, h, kvh, d));
  });

  // bf16 activations: the pipelined flash kernels read q, k, v, dO and write out, dq, dk, dv in bf16 themselves (common.ts);
  // with every next piece on: test/cuda/next/all.test.ts
  it.each(ATTENTION_BF16_CASES.filter((c) => !c.next))('attention on bf16 tensors: the f32 path\'s outputs rounded once, $segs H=$h KVH=$kvh D=$d window=$window', (c) => attentionBf16(r, c));

  it('rope on bf16 tensors: the f32 rotation rounded once, bit for bit', () => ropeBf16(r, false));

  it.each([
    { start: 37, n: 5, h: 4, kvh: 2, d: 80, window: 0 },
    { start: 0, n: 23, h: 3, kvh: 1, d: 64, window: 0 },
    { start: 50, n: 1, h: 8, kvh: 2, d: 128, window: 16 },
  ])('attention decode against a KV cache: start $start, n $n, H=$h KVH=$kvh D=$d window $window', ({ start, n, h, kvh, d, window }) => {
    const A = native();
    const tmax = start + n + 3;
    const q = pair(randn(r, n * h * d), [n, h, d]), k = pair(randn(r, n * kvh * d), [n, kvh, d]), v = pair(randn(r, n * kvh * d), [n, kvh, d]);
    const kc = pair(randn(r, tmax * kvh * d), [tmax, kvh, d]), vc = pair(randn(r, tmax * kvh * d), [tmax, kvh, d]);
    const scale = 1 / Math.sqrt(d);
    const ref = A.opAttentionDecode(handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), handleOf(kc.cpu), handleOf(vc.cpu), start, scale, window);
    const got = A.opAttentionDecode(handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), handleOf(kc.gpu), handleOf(vc.gpu), start, scale, window);
    close(host(got), ref.toArray(), F32_TOL, 'out');
    // the new rows landed in the caches, the rest is untouched: compare the whole caches
    expect(Array.from(host(kc.gpu))).toEqual(Array.from(kc.cpu.toArray()));
    expect(Array.from(host(vc.gpu))).toEqual(Array.from(vc.cpu.toArray()));
    expect(() => A.opAttentionDecode(handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), handleOf(kc.gpu), handleOf(vc.gpu), tmax - n + 1, scale, window))
      .toThrow(expect.objectContaining({ code: 'E_RANGE' }));
  });

  it('attention with head dimension > 128 is E_UNSUPPORTED, not a crash', () => {
    const A = native();
    const q = Tensor.from(randn(r, 4 * 256), [4, 1, 256], { device: 'cuda' });
    const cu = Tensor.from(Int32Array.from([0, 4]), [2], { device: 'cuda' });
    expect(() => A.opAttention(handleOf(q), handleOf(q), handleOf(q), handleOf(cu), 0.1)).toThrow(expect.objectContaining({ code: 'E_UNSUPPORTED' }));
  });
});
