// INSTILL_CUBLASLT_TUNE=on on the GPU (native/cuda/cublaslt.cu): a product key's first call times the heuristic's
// first algorithms and split-K variants of its first two (f32 partials summed in cuBLASLt's workspace), and keeps
// the fastest. Whichever it keeps must still compute the product: LoRA's narrow shapes, which the split-K variants
// are for (outputs of a few tiles over K in the thousands; sizes off every tile), against the CPU, on the tuning
// call and on the next (the kept algorithm), and the two calls give the same bits. The setting is read once per
// process, at its first product, so this file sets it at the top (vitest runs each file in its own process).
process.env.INSTILL_CUBLASLT_TUNE = 'on';

import { describe, expect, it } from 'vitest';

import { rng, seed } from '../../bench/kernels/reference.js';
import { BF16_TOL, bf16Matmul, bits, close, hasCuda, NARROW_MATMUL_CASES } from './common.js';

describe.skipIf(!hasCuda)('cuBLASLt tuning with split-K variants (INSTILL_CUBLASLT_TUNE=on)', () => {
  const r = rng(seed);
  it.each([
    ...NARROW_MATMUL_CASES,
    { what: 'a square product (no variant needed)', m: 515, k: 1030, n: 260, ta: false, tb: true },
  ])('$what: $m×$k×$n, the CPU\'s product on the tuning call and after it', (c) => {
    const { ref, run } = bf16Matmul(r, c);  // into NaN-poisoned outputs: every element must be written
    const first = run(), again = run();
    close(first, ref, BF16_TOL, 'tuning call');
    close(again, ref, BF16_TOL, 'kept algorithm');
    expect(bits(again).equals(bits(first)), 'the tuning call ran the algorithm it kept').toBe(true);
  });
});
