// kernels.matmul (the GEMM every CPU kernel uses) against float64, for all four
// transpose layouts, every operand dtype and every ISA this CPU runs.
import { beforeAll, describe, expect, it } from 'vitest';

import { Tensor, kernels, runtime } from '../../src/index.js';
import { allFinite, matmul64, randn, relError, rng, roundBf16, seed } from '../../bench/kernels/reference.js';
import { isas, poisonAndRestoreIsa } from '../helpers/kernels.js';

poisonAndRestoreIsa();

const shapes = [
  { m: 37, n: 77, k: 123 },
  { m: 1, n: 1, k: 1 },
  { m: 97, n: 33, k: 513 }, // three K blocks, the last ragged; MC + 1 rows
  { m: 5, n: 2049, k: 7 }, // crosses the widest N panel
  { m: 3, n: 4, k: 0 }, // empty inner dimension: zeros
  { m: 9, n: 40, k: 1400 }, // several K blocks on every ISA (the AVX-512 kernel's are up to 640 deep)
  // Narrow products (n, or m, at most two vectors: LoRA's rank-r ones) run on their own kernel:
  { m: 301, n: 16, k: 577 }, // one vector wide on AVX-512, two on AVX2; a last block of fewer rows
  { m: 203, n: 13, k: 1031 }, // columns that fill no vector
  { m: 77, n: 29, k: 611 }, // two vectors wide on AVX-512, the second partial
  { m: 11, n: 531, k: 1029 }, // narrow m: Cᵀ is computed; K in several blocks of the transposed kernel
  { m: 16, n: 1000, k: 3 },
];

describe.each(isas)('matmul on %s', (isa) => {
  beforeAll(() => runtime.setIsa(isa));

  for (const transA of [false, true])
    for (const transB of [false, true])
      it.each(shapes)(`f32 transA=${transA} transB=${transB} M=$m N=$n K=$k`, ({ m, n, k }) => {
        const s = seed + m * 7 + n * 3 + k + (transA ? 1 : 0) + (transB ? 2 : 0);
        const rand = rng(s);
        const a = randn(rand, m * k);
        const b = randn(rand, k * n);
        const at = Tensor.from(a, transA ? [k, m] : [m, k]);
        const bt = Tensor.from(b, transB ? [n, k] : [k, n]);
        const c = kernels.matmul({ a: at, b: bt, transA, transB });
        expect(c.shape).toEqual([m, n]);
        const ref = matmul64(
          m, n, k,
          (i, kk) => (transA ? a[kk * m + i] : a[i * k + kk]),
          (kk, j) => (transB ? b[j * k + kk] : b[kk * n + j]),
        );
        const got = c.toArray();
        expect(allFinite(got), `seed ${s}`).toBe(true);
        expect(relError(got, ref), `seed ${s}`).toBeLessThanOrEqual(1e-5);
      });

  // On AVX512-BF16, two bf16 operands with an even K have A's whole 8-row slivers read in place.
  it.each([
    { dtype: 'bf16', m: 19, n: 45, k: 300 },
    { dtype: 'bf16', m: 21, n: 40, k: 1700 }, // three K blocks, each read in place
    { dtype: 'bf16', m: 13, n: 33, k: 301 }, // odd K: packed
    { dtype: 'f16', m: 19, n: 45, k: 300 },
  ] as const)('$dtype operands are converted exactly (M=$m N=$n K=$k)', ({ dtype, m, n, k }) => {
    const s = seed + 11 + m + k;
    const rand = rng(s);
    const a = Tensor.from(randn(rand, m * k), [m, k], { dtype });
    const b = Tensor.from(randn(rand, n * k), [n, k], { dtype });
    const av = a.toArray(), bv = b.toArray(); // the rounded values the kernel sees
    const c = kernels.matmul({ a, b, transB: true }).toArray();
    const ref = matmul64(m, n, k, (i, kk) => av[i * k + kk], (kk, j) => bv[j * k + kk]);
    expect(relError(c, ref), `seed ${s}`).toBeLessThanOrEqual(1e-5);
  });
});

describe.skipIf(!isas.includes('avx512bf16'))('matmul with the AVX512-BF16 pair kernel', () => {
  beforeAll(() => runtime.setIsa('avx512bf16'));

  it.each([
    { m: 37, n: 77, k: 123, transA: false, transB: true },
    { m: 19, n: 45, k: 301, transA: false, transB: false },
    { m: 8, n: 32, k: 16, transA: true, transB: true },
    { m: 64, n: 96, k: 520, transA: true, transB: false },
    { m: 21, n: 70, k: 1701, transA: false, transB: true }, // three K blocks of the pair kernel (up to 768 deep), odd K
  ])('f32 x bf16 equals the f32 product of both operands rounded to bf16 (M=$m N=$n K=$k transA=$transA transB=$transB)',
    ({ m, n, k, transA, transB }) => {
      const s = seed + 303 + m + n + k;
      const rand = rng(s);
      const a = randn(rand, m * k);
      const bt = Tensor.from(randn(rand, k * n), transB ? [n, k] : [k, n], { dtype: 'bf16' });
      const b = bt.toArray();
      const ar = roundBf16(a);
      const c = kernels.matmul({ a: Tensor.from(a, transA ? [k, m] : [m, k]), b: bt, transA, transB }).toArray();
      const ref = matmul64(
        m, n, k,
        (i, kk) => (transA ? ar[kk * m + i] : ar[i * k + kk]),
        (kk, j) => (transB ? b[j * k + kk] : b[kk * n + j]),
      );
      expect(allFinite(c), `seed ${s}`).toBe(true);
      expect(relError(c, ref), `seed ${s}`).toBeLessThanOrEqual(1e-5);
    });
});

describe('matmul into a given output', () => {
  it('writes into out and returns it, overwriting what was there', () => {
    const rand = rng(seed + 404);
    const a = randn(rand, 13 * 29), b = randn(rand, 29 * 17);
    const out = Tensor.from(new Float32Array(13 * 17).fill(NaN), [13, 17]);
    const c = kernels.matmul({ a: Tensor.from(a, [13, 29]), b: Tensor.from(b, [29, 17]), out });
    expect(c).toBe(out);
    const ref = matmul64(13, 17, 29, (i, k) => a[i * 29 + k], (k, j) => b[k * 17 + j]);
    expect(relError(out.toArray(), ref)).toBeLessThanOrEqual(1e-5);
  });
});

describe('threads', () => {
  it('gives the same result on 1 thread and on several', () => {
    const before = runtime.info().threads;
    const m = 64, n = 200, k = 100;
    const rand = rng(seed + 2);
    const a = Tensor.from(randn(rand, m * k), [m, k]);
    const b = Tensor.from(randn(rand, k * n), [k, n]);
    try {
      runtime.setThreads(1);
      const one = kernels.matmul({ a, b }).toArray();
      runtime.setThreads(3);
      expect(runtime.info().threads).toBe(3);
      const three = kernels.matmul({ a, b }).toArray();
      expect(three).toEqual(one); // the K order per element does not depend on the split
    } finally {
      runtime.setThreads(before);
    }
  });
});
