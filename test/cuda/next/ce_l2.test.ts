// INSTILL_CUDA_NEXT=ce_l2 on the GPU (native/cuda/cross_entropy.cu): the softmax rows of the loss looped over ~5/8 of
// the SMs' worth of blocks instead of a block a row, so that a row's second pass finds it in L2. Each row's arithmetic
// is the default's, so dlogits and dh keep their bits; the loss is summed by atomics in double (another order:
// 1e-12). Rows more than the blocks (200 and 4100 > 5/8 of 132 SMs), ignored rows, an odd vocabulary (no float4
// path), masked and linear CE, and the CPU's results. A file of its own (test/cuda/common.ts says why); skipped where
// no GPU is seen.
import { describe, expect, it } from 'vitest';

import { kernels } from '../../../src/index.js';
import { randn, rng, seed } from '../../../bench/kernels/reference.js';
import { withEnv } from '../../helpers/env.js';
import { BF16_TOL, F32_TOL, close, expectBits, hasCuda, host, pair } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=ce_l2', () => {
  const r = rng(seed);

  it.each([
    { n: 200, v: 1001 },   // odd: the scalar path
    { n: 4100, v: 516 },
  ])('maskedCrossEntropy n $n V $v: the default\'s dlogits bits, the CPU\'s', ({ n, v }) => {
    const L = pair(randn(r, n * v, 3), [n, v]);
    const T = pair(Int32Array.from({ length: n }, (_, i) => (i % 5 === 2 ? -100 : Math.floor(r() * v))), [n]);
    const run = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => kernels.maskedCrossEntropy({ logits: L.gpu, targets: T.gpu }));
    const plain = run('default'), l2 = run('default,ce_l2');
    expect(Math.abs(l2.loss - plain.loss) / plain.loss).toBeLessThan(1e-12);
    expectBits(host(l2.dlogits), host(plain.dlogits), 'dlogits');
    const ref = kernels.maskedCrossEntropy({ logits: L.cpu, targets: T.cpu });
    expect(Math.abs(l2.loss - ref.loss) / ref.loss).toBeLessThan(1e-5);
    close(host(l2.dlogits), ref.dlogits!.toArray(), F32_TOL, 'dlogits against the CPU');
  });

  it('linearCrossEntropy (w bf16, 3000 rows, V 2051): the default\'s dh bits, the CPU\'s', () => {
    const n = 3000, c = 72, v = 2051;
    const h = pair(randn(r, n * c, 1), [n, c]), w = pair(randn(r, v * c, 1), [v, c], 'bf16');
    const T = pair(Int32Array.from({ length: n }, (_, i) => (i % 7 === 0 ? -100 : Math.floor(r() * v))), [n]);
    const run = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => kernels.linearCrossEntropy({ h: h.gpu, w: w.gpu, targets: T.gpu }));
    const plain = run('default'), l2 = run('default,ce_l2');
    expect(Math.abs(l2.loss - plain.loss) / plain.loss).toBeLessThan(1e-12);
    expectBits(host(l2.dh), host(plain.dh), 'dh');
    const ref = kernels.linearCrossEntropy({ h: h.cpu, w: w.cpu, targets: T.cpu });
    expect(Math.abs(l2.loss - ref.loss) / ref.loss).toBeLessThan(1e-3);
    close(host(l2.dh), ref.dh!.toArray(), BF16_TOL, 'dh against the CPU');
  });
});
