// INSTILL_CUDA_NEXT=dq_atomic on the GPU (native/cuda/attention_lean.cu's flash_dkv_lean_kernel<…, kDQ>): the attention
// backward in one pass. The lean dK/dV kernel keeps each tile's dSᵀ in shared memory too and, after a barrier, adds
// scale·dS·K of its 64 keys into dQ with f32 atomics (red.global.add.v2.f32 on sm_90); no dQ kernel recomputes S and
// dP. dK and dV come from the same products as the default's, so their bits; dQ is the same dS (bf16) times the
// same K, summed in another (and run-to-run varying) order: the default's to rounding (8e-3 of the largest element,
// a bf16 ulp of it) and the CPU's within bf16 tolerance. Packed rows with a window, GQA groups split and not
// (dkv_pairs, dkv_whole on top), D 64 and 128, rows not a multiple of 64, f32 inputs (dQ summed in dq itself) and
// bf16 activations (f32 sums rounded into dq16 after); then a bf16 model's pass with head dim 64 (the lean kernels
// take 64 and 128 only). (test/cuda/common.ts's attentionBf16 — the bf16 path gives the f32 path's outputs rounded
// once — holds dq, dk, dv to within a bf16 step, and few of those, where an atomic piece is on: next/all.test.ts.)
// A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { rng, seed } from '../../../bench/kernels/reference.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { BF16_TOL, PIECE_BATCH, attentionBackwardAB, attentionLayout, attentionPieceModel, close, expectBits, expectNearPass, hasCuda,
  host } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=dq_atomic', () => {
  const r = rng(seed);

  it.each([
    { segs: [0, 13, 50, 51, 90], h: 8, kvh: 2, d: 64, window: 0, bf16: false, also: '' },
    { segs: [0, 1, 200, 333], h: 12, kvh: 2, d: 64, window: 40, bf16: true, also: '' },
    { segs: [0, 150, 300], h: 8, kvh: 2, d: 128, window: 0, bf16: true, also: '' },
    { segs: [0, 77, 301], h: 4, kvh: 4, d: 128, window: 0, bf16: false, also: '' },  // no GQA
    { segs: [0, 700], h: 8, kvh: 2, d: 64, window: 0, bf16: true, also: ',dkv_pairs' },
    { segs: [0, 5, 260, 517], h: 6, kvh: 2, d: 64, window: 0, bf16: true, also: ',dkv_whole' },
  ])('attention backward $segs H=$h KVH=$kvh D=$d window=$window bf16 $bf16$also: dK, dV the default\'s bits, dQ its to rounding, the CPU\'s', ({ segs, h, kvh, d, window, bf16, also }) => {
    const { run, cpu } = attentionBackwardAB(r, { segs, h, kvh, d, window, bf16 });
    const plain = run(`default${also}`), one = run(`default${also},dq_atomic`);
    expect(plain.parts.some((p) => p.includes('dq kernel'))).toBe(true);
    expect(one.parts.some((p) => p.includes('dq kernel')), 'no dQ kernel').toBe(false);
    expect(one.parts.some((p) => p.includes(', adding dq')), 'the dK/dV kernel adds dQ').toBe(true);
    expect(one.parts.some((p) => p.includes('dq sums rounded to bf16'))).toBe(bf16);
    for (const key of ['dk', 'dv'] as const) {
      expectBits(host(one.value[key]), host(plain.value[key]), `${key}: the default's products`, attentionLayout(key, segs, h, kvh, d));
    }
    const dq = host(one.value.dq) as Float32Array;
    expect(dq.every(Number.isFinite), 'dq finite').toBe(true);
    close(dq, host(plain.value.dq), 8e-3, 'dq against the default', attentionLayout('dq', segs, h, kvh, d));
    const refB = cpu();
    // (bf16 activations: the inputs rounded to bf16 too, a little farther from the CPU's f32 pass)
    close(dq, refB.dq.toArray(), bf16 ? 2 * BF16_TOL : BF16_TOL, 'dq against the CPU', attentionLayout('dq', segs, h, kvh, d));
  });

  it('the 1B model\'s shape (T 2048, 32 / 8 heads of 64), bf16 activations: dQ the default\'s to rounding', () => {
    const segs = [0, 2048], h = 32, kvh = 8, d = 64;
    const { run } = attentionBackwardAB(r, { segs, h, kvh, d, window: 0, bf16: true });
    const plain = run('default').value, one = run('default,dq_atomic').value;
    expectBits(host(one.dk), host(plain.dk), 'dk', attentionLayout('dk', segs, h, kvh, d));
    expectBits(host(one.dv), host(plain.dv), 'dv', attentionLayout('dv', segs, h, kvh, d));
    close(host(one.dq), host(plain.dq), 8e-3, 'dq against the default', attentionLayout('dq', segs, h, kvh, d));
  });

  it('a bf16 model\'s pass (head dim 64, bf16 activations): the default\'s loss and LoRA gradients to rounding', async () => {
    const m = attentionPieceModel(43);
    const pass = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
    const plain = await pass('default'), one = await pass('default,dq_atomic');
    expect(Object.keys(one.calls).some((c) => c.includes(', adding dq'))).toBe(true);
    expect(Object.keys(one.calls).some((c) => c.includes('dq kernel'))).toBe(false);
    const worst = expectNearPass(one.value, plain.value, 'dq_atomic');
    console.log(`dq_atomic (model): worst LoRA gradient ${worst.toExponential(2)} from the default's`);
    m.dispose();
  });
});
