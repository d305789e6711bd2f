// INSTILL_CUDA_NEXT=rope_token on the GPU: rope with cos and sin once per token, the verified kernel's bits.
// A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen, like test/cuda.
import { describe, expect, it } from 'vitest';

import { handleOf } from '../../../src/tensor.js';
import { native } from '../../../src/native.js';
import { randn, rng, seed } from '../../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { expectBits, hasCuda, host, pair } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=rope_token', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  it.each([
    { n: 29, h: 3, d: 10 },
    { n: 2048, h: 32, d: 64 },  // the 1B model's q
    { n: 300, h: 5, d: 256 },   // half = 128, the per-token kernel's largest
  ])('rope with cos, sin once per token (INSTILL_CUDA_NEXT=rope_token): the verified kernel\'s bits, n $n H $h D $d', ({ n, h, d }) => {
    const A = native();
    const x = pair(randn(r, n * h * d), [n, h, d]);
    const pos = pair(Int32Array.from({ length: n }, (_, i) => (i < n / 2 ? i : 3 * i + 1000)), [n]);
    const inv = pair(Float32Array.from({ length: d / 2 }, (_, i) => 500000 ** (-(2 * i) / d)), [d / 2]);
    for (const backward of [false, true]) {
      const run = (next: boolean) => withEnv('INSTILL_CUDA_NEXT', next ? 'rope_token' : 'none', () => {
        const { value: out, parts } = withOpProfile(() => host(A.opRope(handleOf(x.gpu), handleOf(pos.gpu), handleOf(inv.gpu), backward)));
        return { out, parts };
      });
      const verified = run(false), next = run(true);
      const part = `${backward ? 'rope_backward' : 'rope_forward'}/cos, sin once per token (next)`;
      expect(verified.parts).not.toContain(part);
      expect(next.parts).toContain(part);
      expectBits(next.out, verified.out, `backward=${backward}`, { shape: [n, h, d] });
    }
  });
});
