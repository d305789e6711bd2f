// INSTILL_CUDA_NEXT=dkv_atomic on the GPU (native/cuda/attention_lean.cu's add_rows in flash_dkv_lean_kernel): where
// the dK/dV kernel splits a GQA group's query heads over CTAs (short rows), each CTA adds its dK (·scale) and dV
// into the group's f32 sums (red.global.add.v2.f32 on sm_90), zeroed with Δ, instead of writing per-head partials
// that flash_dkv_reduce_kernel sums; with bf16 activations the sums are rounded after (with dQ's under dq_atomic).
// The same products, summed over a group's heads in another (run-to-run varying) order: dK and dV the default's to
// rounding (8e-3 of the largest element, a bf16 ulp of it) and the CPU's within bf16 tolerance; dQ untouched (its
// bits, unless dq_atomic is on too). Where the default does not split (long rows, or no GQA) nothing changes: the
// default's bits. Then a bf16 model's pass with head dim 64 (the lean kernels take 64 and 128 only).
// A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { rng, seed } from '../../../bench/kernels/reference.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { BF16_TOL, PIECE_BATCH, attentionBackwardAB, attentionLayout, attentionPieceModel, close, expectBits, expectNearPass, hasCuda,
  host } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=dkv_atomic', () => {
  const r = rng(seed);

  it.each([
    { segs: [0, 13, 50, 51, 90], h: 8, kvh: 2, d: 64, window: 0, bf16: false, also: '', splits: true },
    { segs: [0, 1, 200, 333], h: 12, kvh: 2, d: 64, window: 40, bf16: true, also: '', splits: true },
    { segs: [0, 150, 300], h: 8, kvh: 2, d: 128, window: 0, bf16: true, also: '', splits: true },
    { segs: [0, 700], h: 8, kvh: 2, d: 64, window: 0, bf16: true, also: ',dkv_pairs', splits: true },
    { segs: [0, 5, 260, 517], h: 6, kvh: 2, d: 64, window: 0, bf16: true, also: ',dq_atomic', splits: true },
    { segs: [0, 77, 301], h: 8, kvh: 4, d: 128, window: 0, bf16: false, also: ',dq_atomic', splits: true },
    { segs: [0, 2500, 4300], h: 16, kvh: 8, d: 64, window: 0, bf16: true, also: '', splits: false },  // long rows: unsplit
    { segs: [0, 77, 301], h: 4, kvh: 4, d: 64, window: 0, bf16: false, also: '', splits: false },  // no GQA
  ])('attention backward $segs H=$h KVH=$kvh D=$d window=$window bf16 $bf16$also: dK, dV the default\'s to rounding, the CPU\'s', ({ segs, h, kvh, d, window, bf16, also, splits }) => {
    const { run, cpu } = attentionBackwardAB(r, { segs, h, kvh, d, window, bf16 });
    const plain = run(`default${also}`), one = run(`default${also},dkv_atomic`);
    expect(one.parts.some((p) => p.includes(', adding dk dv')), 'the split CTAs add into the sums').toBe(splits);
    expect(plain.parts.some((p) => p.includes('dk dv sum over query')), 'the default sums partials').toBe(splits);
    expect(one.parts.some((p) => p.includes('dk dv sum over query')), 'no partials to sum').toBe(false);
    const dqAtomic = also.includes('dq_atomic');
    expect(one.parts.some((p) => p.includes('sums rounded to bf16'))).toBe(bf16 && (splits || dqAtomic));
    for (const key of ['dq', 'dk', 'dv'] as const) {
      const got = host(one.value[key]) as Float32Array, want = host(plain.value[key]);
      const layout = attentionLayout(key, segs, h, kvh, d);
      expect(got.every(Number.isFinite), `${key} finite`).toBe(true);
      if (!splits || (key === 'dq' && !dqAtomic)) expectBits(got, want, `${key}: the default's`, layout);
      else close(got, want, 8e-3, `${key} against the default`, layout);
    }
    const refB = cpu();
    // (bf16 activations: the inputs rounded to bf16 too, a little farther from the CPU's f32 pass)
    for (const key of ['dk', 'dv'] as const) {
      close(host(one.value[key]), refB[key].toArray(), bf16 ? 2 * BF16_TOL : BF16_TOL, `${key} against the CPU`, attentionLayout(key, segs, h, kvh, d));
    }
  });

  it('INSTILL_CUDA_DETERMINISTIC=1: dq_atomic and dkv_atomic stay off though named, the default\'s kernels and bits', () => {
    const segs = [0, 13, 50, 51, 90], h = 8, kvh = 2, d = 64;
    const { run } = attentionBackwardAB(r, { segs, h, kvh, d, window: 0, bf16: true });
    const plain = run('default');
    const det = withEnv('INSTILL_CUDA_DETERMINISTIC', '1', () => run('default,dq_atomic,dkv_atomic'));
    expect(det.parts.some((p) => p.includes('dq kernel'))).toBe(true);
    expect(det.parts.some((p) => p.includes('dk dv sum over query heads'))).toBe(true);
    expect(det.parts.some((p) => p.includes('adding'))).toBe(false);
    for (const key of ['dq', 'dk', 'dv'] as const) {
      expectBits(host(det.value[key]), host(plain.value[key]), key, attentionLayout(key, segs, h, kvh, d));
    }
  });

  it('a bf16 model\'s pass (head dim 64, bf16 activations), with dq_atomic too: the default\'s loss and LoRA gradients to rounding', async () => {
    const m = attentionPieceModel(47);
    const pass = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
    const plain = await pass('default');
    for (const next of ['default,dkv_atomic', 'default,dq_atomic,dkv_atomic']) {
      const one = await pass(next);
      expect(Object.keys(one.calls).some((c) => c.includes(', adding dk dv')), next).toBe(true);
      expect(Object.keys(one.calls).some((c) => c.includes('dk dv sum over query')), next).toBe(false);
      const worst = expectNearPass(one.value, plain.value, next);
      console.log(`${next} (model): worst LoRA gradient ${worst.toExponential(2)} from the default's`);
    }
    m.dispose();
  });
});
