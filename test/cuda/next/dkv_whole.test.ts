// INSTILL_CUDA_NEXT=dkv_whole on the GPU (native/cuda/attention_flash.cu's attention_flash_dkv_split): the dK/dV kernel
// never splits a GQA group's query heads over CTAs, even for short rows (where the default splits them and sums the
// per-head partials after): each CTA takes its whole group, the path long rows take already. The same products; the
// f32 sums over the group's heads in the kernel's order instead of the partials' sum, so the results are the
// default's to rounding (8e-3 of the largest element: a bf16 ulp of it), and the CPU's within bf16 tolerance.
// A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { handleOf } from '../../../src/tensor.js';
import { native } from '../../../src/native.js';
import { rng, seed } from '../../../bench/kernels/reference.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { BF16_TOL, attentionInputs, attentionLayout, close, hasCuda, host } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=dkv_whole', () => {
  const r = rng(seed);

  it.each([
    { segs: [0, 13, 50, 51, 90], h: 8, kvh: 2, d: 64, window: 0 },
    { segs: [0, 1, 200, 333], h: 6, kvh: 2, d: 128, window: 40 },
  ])('attention backward $segs H=$h KVH=$kvh D=$d window=$window: unsplit, the default\'s to rounding, the CPU\'s', ({ segs, h, kvh, d, window }) => {
    const A = native();
    const { q, k, v, dout, cu, scale } = attentionInputs(r, segs, h, kvh, d);
    const fwd = A.opAttention(handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), handleOf(cu.gpu), scale, window);
    const run = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() =>
      A.opAttentionBackward(handleOf(dout.gpu), handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), fwd.out, fwd.lse, handleOf(cu.gpu), scale, window)));
    const plain = run('default'), whole = run('default,dkv_whole');
    expect(plain.parts.some((p) => p.includes('dk dv sum over query heads')), 'the default splits these short rows').toBe(true);
    expect(whole.parts.some((p) => p.includes('dk dv sum')), 'no partials to sum').toBe(false);
    for (const key of ['dq', 'dk', 'dv'] as const) {
      close(host(whole.value[key]), host(plain.value[key]), 8e-3, `${key} against the default`, attentionLayout(key, segs, h, kvh, d));
    }
    const ref = A.opAttention(handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), handleOf(cu.cpu), scale, window);
    const refB = A.opAttentionBackward(handleOf(dout.cpu), handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), ref.out, ref.lse, handleOf(cu.cpu), scale, window);
    for (const key of ['dq', 'dk', 'dv'] as const) {
      close(host(whole.value[key]), refB[key].toArray(), BF16_TOL, `${key} against the CPU`, attentionLayout(key, segs, h, kvh, d));
    }
  });
});
