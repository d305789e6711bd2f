// INSTILL_CUDA_NEXT=dkv_whole on the GPU (native/cuda/attention_flash.cu's attention_flash_dkv_split): the dK/dV kernel
// never splits a GQA group's query heads over CTAs, even for short rows (where the default splits them and sums the
// per-head partials after): each CTA takes its whole group, the path long rows take already. The same products; the
// f32 sums over the group's heads in the kernel's order instead of the partials' sum, so the results are the
// default's to rounding (8e-3 of the largest element: a bf16 ulp of it), and the CPU's within bf16 tolerance.
// A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { rng, seed } from '../../../bench/kernels/reference.js';
import { BF16_TOL, attentionBackwardAB, attentionLayout, close, hasCuda, host } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=dkv_whole', () => {
  const r = rng(seed);

  it.each([
    { segs: [0, 13, 50, 51, 90], h: 8, kvh: 2, d: 64, window: 0 },
    { segs: [0, 1, 200, 333], h: 6, kvh: 2, d: 128, window: 40 },
  ])('attention backward $segs H=$h KVH=$kvh D=$d window=$window: unsplit, the default\'s to rounding, the CPU\'s', ({ segs, h, kvh, d, window }) => {
    const { run, cpu } = attentionBackwardAB(r, { segs, h, kvh, d, window });
    const plain = run('default'), whole = run('default,dkv_whole');
    expect(plain.parts.some((p) => p.includes('dk dv sum over query heads')), 'the default splits these short rows').toBe(true);
    expect(whole.parts.some((p) => p.includes('dk dv sum')), 'no partials to sum').toBe(false);
    for (const key of ['dq', 'dk', 'dv'] as const) {
      close(host(whole.value[key]), host(plain.value[key]), 8e-3, `${key} against the default`, attentionLayout(key, segs, h, kvh, d));
    }
    const refB = cpu();
    for (const key of ['dq', 'dk', 'dv'] as const) {
      close(host(whole.value[key]), refB[key].toArray(), BF16_TOL, `${key} against the CPU`, attentionLayout(key, segs, h, kvh, d));
    }
  });
});
