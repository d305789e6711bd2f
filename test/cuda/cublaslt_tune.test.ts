// INSTILL_CUBLASLT_TUNE=on on the GPU (native/cuda/cublaslt.cu): a product key's first call times the heuristic's
// first algorithms and split-K variants of its first two (f32 partials summed in cuBLASLt's workspace), and keeps
// the fastest. Whichever it keeps must still compute the product: LoRA's narrow shapes, which the split-K variants
// are for (outputs of a few tiles over K in the thousands; sizes off every tile), against the CPU, on the tuning
// call and on the next (the kept algorithm), and the two calls give the same bits. The setting is read once per
// process, at its first product, so this file sets it at the top (vitest runs each file in its own process).
process.env.INSTILL_CUBLASLT_TUNE = 'on';

import { describe, expect, it } from 'vitest';

import { Tensor, kernels } from '../../src/index.js';
import { randn, rng, seed } from '../../bench/kernels/reference.js';
import { BF16_TOL, bits, close, hasCuda, host, pair } from './common.js';

describe.skipIf(!hasCuda)('cuBLASLt tuning with split-K variants (INSTILL_CUBLASLT_TUNE=on)', () => {
  const r = rng(seed);
  it.each([
    { what: 'u = x Aᵀ', m: 2047, k: 2048, n: 48, ta: false, tb: true },
    { what: 'dA = gᵀ x (K = tokens)', m: 48, k: 2043, n: 2048, ta: true, tb: false },
    { what: 'g = dy B (K = gate/up outputs)', m: 2047, k: 8192, n: 16, ta: false, tb: false },
    { what: 'dB = dyᵀ u', m: 8192, k: 2047, n: 16, ta: true, tb: false },
    { what: 'a square product (no variant needed)', m: 515, k: 1030, n: 260, ta: false, tb: true },
  ])('$what: $m×$k×$n, the CPU\'s product on the tuning call and after it', ({ m, k, n, ta, tb }) => {
    const a = pair(randn(r, m * k), ta ? [k, m] : [m, k], 'bf16');
    const b = pair(randn(r, k * n), tb ? [n, k] : [k, n], 'bf16');
    const ref = kernels.matmul({ a: a.cpu, b: b.cpu, transA: ta, transB: tb }).toArray();
    // into NaN-poisoned outputs: every element must be written
    const poisoned = () => Tensor.from(new Float32Array(m * n).fill(Number.NaN), [m, n]).to('cuda');
    const first = host(kernels.matmul({ a: a.gpu, b: b.gpu, transA: ta, transB: tb, out: poisoned() }));
    const again = host(kernels.matmul({ a: a.gpu, b: b.gpu, transA: ta, transB: tb, out: poisoned() }));
    close(first, ref, BF16_TOL, 'tuning call');
    close(again, ref, BF16_TOL, 'kept algorithm');
    expect(bits(again).equals(bits(first)), 'the tuning call ran the algorithm it kept').toBe(true);
  });
});
