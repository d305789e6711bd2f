// INSTILL_CUDA_NEXT=optim_loads on the GPU (native/cuda/adamw.cu): AdamW through float4s (four elements an iteration;
// a scalar tail) and sum_squares' threads loading 8 of their elements before adding them in the same order. Each
// element's update is the same expression and each sum the same order, so p, m, v and the sum of squares must keep
// their bits: three AdamW steps (the third with a gradient scale, as clipping gives) over sizes with every kind of
// chunk (70001: three chunks of 32768, the last partial and not a multiple of 4; 5: a tail only; 65536: whole
// chunks), and sum_squares over tensors of several chunks, an empty one and short ones. The op profile's parts say
// which kernel ran. A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { Tensor } from '../../../src/index.js';
import { native } from '../../../src/native.js';
import { handleOf } from '../../../src/tensor.js';
import { randn, rng } from '../../../bench/kernels/reference.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { expectBits, hasCuda, host } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=optim_loads', () => {
  it.each([70001, 5, 65536])('adamw over %i elements: p, m and v with the one-element kernel\'s bits, three steps', (n) => {
    const A = native();
    const r = rng(8100 + n);
    const p0 = randn(r, n), grads = [randn(r, n), randn(r, n), randn(r, n)];
    const run = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => {
      const gpu = (a: Float32Array) => Tensor.from(a, [n]).to('cuda');
      const p = gpu(p0), m = gpu(new Float32Array(n)), v = gpu(new Float32Array(n));
      const parts = new Set<string>();
      for (let t = 1; t <= 3; t++) {
        const g = gpu(grads[t - 1]);
        const prof = withOpProfile(() => A.opAdamw(handleOf(p), handleOf(g), handleOf(m), handleOf(v), 1e-2, 0.9, 0.95, 1e-8, 0.1, t, t === 3 ? 0.3 : 1));
        prof.parts.forEach((x) => parts.add(x));
      }
      return { p: host(p), m: host(m), v: host(v), parts };
    });
    const plain = run('default,-optim_loads'), wide = run('default,optim_loads');
    expect([...plain.parts].some((x) => x.endsWith('(next)'))).toBe(false);
    expect(wide.parts.has('adamw_step/float4s (next)')).toBe(true);
    for (const key of ['p', 'm', 'v'] as const) expectBits(wide[key], plain[key], key);
  });

  it('sum_squares over several chunks, an empty tensor and short ones: the same sum, bit for bit', () => {
    const A = native();
    const r = rng(8200);
    const ts = [70001, 0, 131077, 37, 2047].map((n) => Tensor.from(randn(r, n, 2), [n]).to('cuda'));
    const run = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() => A.opSumSquares(ts.map((t) => handleOf(t)))));
    const plain = run('default,-optim_loads'), wide = run('default,optim_loads');
    expect(plain.parts.some((x) => x.endsWith('(next)'))).toBe(false);
    expect(wide.parts).toContain('sum_squares/8 loads at a time (next)');
    expect(Number.isFinite(wide.value) && wide.value > 0).toBe(true);
    expect(Object.is(wide.value, plain.value)).toBe(true);
  });
});
