// INSTILL_CUDA_NEXT=1 on the GPU: every piece at once, and the switch's parsing.
// A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen, like test/cuda.
import { describe, expect, it } from 'vitest';

import { Tensor } from '../../../src/index.js';
import { native } from '../../../src/native.js';
import { handleOf } from '../../../src/tensor.js';
import { randn, rng, seed } from '../../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { ATTENTION_BF16_CASES, attentionBf16, hasCuda, ropeBf16 } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=1', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  it('INSTILL_CUDA_NEXT picks kernels one by one: all, -name leaves one out, an unknown name is E_ARG', () => {
    const A = native();
    const x = Tensor.from(randn(r, 7 * 2 * 8), [7, 2, 8], { dtype: 'bf16' }).to('cuda');
    const x2 = Tensor.from(randn(r, 7 * 1 * 8), [7, 1, 8], { dtype: 'bf16' }).to('cuda');
    const pos = Tensor.from(Int32Array.from({ length: 7 }, (_, i) => i), [7], { dtype: 'i32' }).to('cuda');
    const inv = Tensor.from(Float32Array.from({ length: 4 }, (_, i) => 10000 ** (-(2 * i) / 8)), [4]).to('cuda');
    const ranOnePass = (value: string) => withEnv('INSTILL_CUDA_NEXT', value, () =>
      withOpProfile(() => A.opRopePair(handleOf(x), handleOf(x2), handleOf(pos), handleOf(inv), false)).parts.some((part) => part.startsWith('rope_forward/q and k in one pass')));  // (rope_qk's kernel, or rope_rows')
    expect(ranOnePass('all')).toBe(true);
    expect(ranOnePass('residual,rope_qk')).toBe(true);
    expect(ranOnePass('all,-rope_qk')).toBe(false);
    expect(ranOnePass('residual')).toBe(false);
    expect(() => ranOnePass('pack_bw')).toThrow(expect.objectContaining({ code: 'E_ARG', message: expect.stringContaining("'pack_bw'") }));
  });

  // every piece at once, on bf16 tensors (common.ts): the f32 path's outputs rounded once
  it.each(ATTENTION_BF16_CASES.filter((c) => c.next))('attention on bf16 tensors: the f32 path\'s outputs rounded once, $segs H=$h KVH=$kvh D=$d window=$window (INSTILL_CUDA_NEXT=1)', (c) => attentionBf16(r, c));

  it('rope on bf16 tensors: the f32 rotation rounded once, bit for bit (INSTILL_CUDA_NEXT=1)', () => ropeBf16(r, true));
});
