// INSTILL_CUDA_NEXT=dq_wgmma on the GPU: the attention backward's dQ kernel on Hopper's warpgroup products
// (native/cuda/attention_wgmma.cu). A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
// On a GPU of compute capability 9.0 (H100, H200) the piece must take dQ at head dim 64; anywhere else (and at
// D 128) it must leave the default's bits as they are.
import { describe, expect, it } from 'vitest';

import { Tensor } from '../../../src/index.js';
import { native, type TensorHandle } from '../../../src/native.js';
import { handleOf } from '../../../src/tensor.js';
import { rng, roundBf16, seed } from '../../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { relError } from '../../helpers/compare.js';
import { attentionBackward64, attentionInputs, attentionLayout, BF16_TOL, close, expectBits, hasCuda, HOPPER, host } from '../common.js';

const DQ = 'attention_backward/dq kernel, wgmma (next)';
const KT = 'attention_backward/k transposed (wgmma, next)';
const PIECE = 'default,dq_wgmma';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=dq_wgmma', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  // Each case: the backward with the piece on the default forward's out and lse, dq against float64 on the inputs as
  // the kernels read them (rounded to bf16; dS is rounded to bf16 before dS·K, and dP − Δ cancels: BF16_TOL of the
  // largest element, as every flash backward test), against the default's dq (the lean kernel: the same arithmetic,
  // the products' sums in another order), deterministic, and dk, dv the default's bits (their kernels are not
  // touched). Segments and windows whose first visible key is no multiple of 64, rows ending inside a tile, GQA
  // 4:1, 2:1 and 1:1, f32 inputs (bf16 copies) and bf16 activations, and D 128, which the piece leaves alone.
  // Outputs come from the allocator poisoned (NaN): an element left unwritten fails the finiteness check.
  it.each([
    { segs: [0, 13, 50, 51, 90], h: 4, kvh: 2, d: 64, window: 0, kind: 'f32' },
    { segs: [0, 1, 200, 333], h: 4, kvh: 1, d: 64, window: 40, kind: 'f32' },
    { segs: [0, 300, 701], h: 4, kvh: 2, d: 64, window: 0, kind: 'bf16' },
    { segs: [0, 130, 259], h: 2, kvh: 2, d: 64, window: 70, kind: 'bf16' },
    { segs: [0, 150, 300], h: 8, kvh: 2, d: 128, window: 0, kind: 'f32' },
  ])('against float64 and the default: $segs H=$h KVH=$kvh D=$d window=$window $kind', ({ segs, h, kvh, d, window, kind }) => {
    const A = native();
    const n = segs[segs.length - 1];
    const { q, k, v, dout, cu, scale } = attentionInputs(r, segs, h, kvh, d);
    const bf = (t: Tensor) => Tensor.from(t.toArray() as Float32Array, t.shape, { dtype: 'bf16' });
    const dev = (t: { cpu: Tensor }) => (kind === 'bf16' ? bf(t.cpu).to('cuda') : t.cpu.to('cuda'));
    const [qg, kg, vg, dg] = [dev(q), dev(k), dev(v), dev(dout)];
    const at = (key: 'dq' | 'dk' | 'dv') => attentionLayout(key, segs, h, kvh, d);
    const label = `${kind} n ${n} D ${d}`;
    const f = A.opAttention(handleOf(qg), handleOf(kg), handleOf(vg), handleOf(cu.cpu), scale, window) as { out: TensorHandle; lse: TensorHandle };
    const backward = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() => {
      const b = A.opAttentionBackward(handleOf(dg), handleOf(qg), handleOf(kg), handleOf(vg), f.out, f.lse, handleOf(cu.cpu), scale, window);
      return { dq: host(b.dq), dk: host(b.dk), dv: host(b.dv) };
    }));
    const base = backward('default'), got = backward(PIECE), again = backward(PIECE);
    expect(base.parts).not.toContain(DQ);
    const takes = HOPPER && d === 64;
    expect(got.parts.includes(DQ), `${label}: the wgmma dQ kernel ran`).toBe(takes);
    expect(got.parts.includes(KT), `${label}: K transposed for it`).toBe(takes);
    for (const key of ['dk', 'dv'] as const) expectBits(got.value[key], base.value[key], `${label}: ${key}, the default's bits`, at(key));
    if (!takes) return expectBits(got.value.dq, base.value.dq, `${label}: dq, the default's bits`, at('dq'));
    expect(got.value.dq.every((x) => Number.isFinite(x)), `${label}: dq finite`).toBe(true);
    expectBits(again.value.dq, got.value.dq, `${label}: dq deterministic`, at('dq'));
    const rounded = (t: { cpu: Tensor }) => roundBf16(t.cpu.toArray() as Float32Array);
    const ref = attentionBackward64(rounded(q), rounded(k), rounded(v), rounded(dout), segs, h, kvh, d, scale, window).dq;
    close(got.value.dq, ref, BF16_TOL, `${label}: dq against float64`, at('dq'));
    close(got.value.dq, base.value.dq, 1e-2, `${label}: dq against the default's`, at('dq'));
    console.log(`dq_wgmma ${label}: max |dq − float64| / max |float64| ${relError(got.value.dq, ref).toExponential(1)} ` +
      `(the default's ${relError(base.value.dq, ref).toExponential(1)})`);
  });

  // The 1B step's shape (T 2048, 32/8 heads, D 64, bf16 activations), 1024 CTAs: against the default and the CPU.
  it('at the 1B step\'s shape against the default and the CPU', () => {
    const A = native();
    const segs = [0, 2048], h = 32, kvh = 8, d = 64;
    const { q, k, v, dout, cu, scale } = attentionInputs(r, segs, h, kvh, d);
    const bf = (t: Tensor) => Tensor.from(t.toArray() as Float32Array, t.shape, { dtype: 'bf16' });
    const cpuIn = [bf(q.cpu), bf(k.cpu), bf(v.cpu), bf(dout.cpu)];
    const [qg, kg, vg, dg] = cpuIn.map((t) => t.to('cuda'));
    const f = A.opAttention(handleOf(qg), handleOf(kg), handleOf(vg), handleOf(cu.cpu), scale, 0) as { out: TensorHandle; lse: TensorHandle };
    const backward = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() =>
      host(A.opAttentionBackward(handleOf(dg), handleOf(qg), handleOf(kg), handleOf(vg), f.out, f.lse, handleOf(cu.cpu), scale, 0).dq)));
    const base = backward('default'), got = backward(PIECE);
    expect(got.parts.includes(DQ)).toBe(HOPPER);
    const cf = A.opAttention(handleOf(cpuIn[0]), handleOf(cpuIn[1]), handleOf(cpuIn[2]), handleOf(cu.cpu), scale, 0);
    const cb = A.opAttentionBackward(handleOf(cpuIn[3]), handleOf(cpuIn[0]), handleOf(cpuIn[1]), handleOf(cpuIn[2]), cf.out, cf.lse, handleOf(cu.cpu), scale, 0);
    expect(got.value.every((x) => Number.isFinite(x))).toBe(true);
    close(got.value, base.value, 1e-2, 'dq against the default\'s', attentionLayout('dq', segs, h, kvh, d));
    close(got.value, host(cb.dq), BF16_TOL, 'dq against the CPU', attentionLayout('dq', segs, h, kvh, d));
  });
});
