// INSTILL_CUDA_NEXT=dkv_pairs on the GPU (native/cuda/attention_flash.cu's attention_flash_dkv_hpc): where the dK/dV
// kernel splits a group's query heads over CTAs (short rows: fewer CTAs than 4 an SM unsplit), each CTA takes two
// query heads one after the other into one partial, so half the partials are written and summed. The same products;
// the f32 sums of the two heads in another order, so the results are the default's to rounding (held to 8e-3 of the
// largest element: a bf16 ulp of it), and the CPU's within bf16 tolerance. GQA groups of 4 and 6 (pairs), of 2 (none:
// the split as before), packed rows with a window, f32 inputs (pipelined bf16 copies) and bf16 activations.
// A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { rng, seed } from '../../../bench/kernels/reference.js';
import { BF16_TOL, attentionBackwardAB, attentionLayout, close, hasCuda, host } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=dkv_pairs', () => {
  const r = rng(seed);

  it.each([
    { segs: [0, 13, 50, 51, 90], h: 8, kvh: 2, d: 64, window: 0, bf16: false },
    { segs: [0, 1, 200, 333], h: 12, kvh: 2, d: 64, window: 40, bf16: true },
    { segs: [0, 150, 300], h: 8, kvh: 2, d: 128, window: 0, bf16: true },
    { segs: [0, 700], h: 4, kvh: 2, d: 64, window: 0, bf16: true },  // groups of 2: no pairs
  ])('attention backward $segs H=$h KVH=$kvh D=$d window=$window bf16 $bf16: the default\'s to rounding, the CPU\'s', ({ segs, h, kvh, d, window, bf16 }) => {
    const { run, cpu } = attentionBackwardAB(r, { segs, h, kvh, d, window, bf16 });
    const plain = run('default'), pairs = run('default,dkv_pairs');
    const pairKernel = pairs.parts.some((p) => p.includes('per two query heads'));
    expect(pairKernel, 'the dK/dV kernel two query heads a CTA').toBe((h / kvh) % 2 === 0 && h / kvh >= 4);
    expect(plain.parts.some((p) => p.includes('per two query heads'))).toBe(false);
    for (const key of ['dq', 'dk', 'dv'] as const) {
      close(host(pairs.value[key]), host(plain.value[key]), 8e-3, `${key} against the default`, attentionLayout(key, segs, h, kvh, d));
    }
    const refB = cpu();
    // (bf16 activations: the inputs rounded to bf16 too, a little farther from the CPU's f32 pass)
    const tol = bf16 ? 2 * BF16_TOL : BF16_TOL;
    for (const key of ['dq', 'dk', 'dv'] as const) {
      close(host(pairs.value[key]), refB[key].toArray(), tol, `${key} against the CPU`, attentionLayout(key, segs, h, kvh, d));
    }
  });
});
