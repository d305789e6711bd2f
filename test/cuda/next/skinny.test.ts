// INSTILL_CUDA_NEXT=skinny on the GPU (native/cuda/skinny.cu): LoRA's narrow products (N ≤ 64, or M ≤ 64 as the
// transposed product; bf16: u = x·Aᵀ, g = dy·B, dB = s·dyᵀ·u, dA = s·gᵀ·x) on mma.sync, split over K, the splits'
// partials added by the last CTA of each row tile in split order. Checked against a float64 product of the same bf16
// values on sizes off every tile (rows not a multiple of 128, K not of 64, N not of 8), into NaN-poisoned outputs,
// A along K and along M, both of B's layouts, aligned and not, one split and many; the
// part row says the kernel ran (and did not where the product is not its kind). Then the 2-layer model's pass against
// the default's: the same products summed in another order (expectNearPass), the part counted in the forward and the
// backward. A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { Tensor, kernels } from '../../../src/index.js';
import { randn, rng } from '../../../bench/kernels/reference.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { PIECE_BATCH, abs, closeScaled, expectNearPass, gradBitsDiffer, hasCuda, host, pair, pieceLoraModel, pieceModelConfig } from '../common.js';

const PART = 'matmul/narrow product, split K (next)';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=skinny', () => {
  const r = rng(1806);
  it.each([
    { what: 'u = x Aᵀ, 1B q/k/v shape', m: 2047, k: 2048, n: 48, ta: false, tb: true },
    { what: 'g = dy B, 1B gate/up shape', m: 2047, k: 16384, n: 32, ta: false, tb: false },
    { what: 'down\'s u, one row tile', m: 100, k: 8192, n: 16, ta: false, tb: true },
    { what: 'K tail in the last split\'s last block', m: 300, k: 1000, n: 61, ta: false, tb: false },
    { what: 'one split', m: 300, k: 200, n: 61, ta: false, tb: false },
    { what: 'N 5, one row past a tile', m: 129, k: 520, n: 5, ta: false, tb: true },
    { what: 'B columns not 16-byte aligned', m: 257, k: 2056, n: 13, ta: false, tb: false },
    { what: 'dB = dyᵀ u (A along M)', m: 3072, k: 2047, n: 48, ta: true, tb: false },
    { what: 'dB, B rows not 16-byte aligned', m: 136, k: 300, n: 7, ta: true, tb: true },
    { what: 'dA = gᵀ x (M narrow: the transposed product, along M)', m: 48, k: 2043, n: 2048, ta: true, tb: false },
    { what: 'M narrow, the transposed product along K', m: 20, k: 704, n: 304, ta: false, tb: true },
  ])('$what: M $m, K $k, N $n, A stored ($ta: (K, M)), B stored ($tb: (N, K)) against a float64 product', ({ m, k, n, ta, tb }) => {
    const a = pair(randn(r, m * k), ta ? [k, m] : [m, k], 'bf16');
    const b = pair(randn(r, k * n), tb ? [n, k] : [k, n], 'bf16');
    const av = a.cpu.toArray() as Float32Array, bv = b.cpu.toArray() as Float32Array;  // the bf16 values
    const ref = new Float64Array(m * n), mag = new Float64Array(m * n);
    for (let i = 0; i < m; ++i) {
      for (let kk = 0; kk < k; ++kk) {
        const x = ta ? av[kk * m + i] : av[i * k + kk];
        for (let j = 0; j < n; ++j) {
          const y = tb ? bv[j * k + kk] : bv[kk * n + j];
          ref[i * n + j] += x * y;
          mag[i * n + j] += Math.abs(x * y);
        }
      }
    }
    const out = Tensor.from(new Float32Array(m * n).fill(Number.NaN), [m, n]).to('cuda');
    const { calls } = withEnv('INSTILL_CUDA_NEXT', 'default,skinny', () =>
      withOpProfile(() => kernels.matmul({ a: a.gpu, b: b.gpu, transA: ta, transB: tb, out })));
    expect(calls[PART], 'the narrow kernel ran').toBe(1);
    // f32 sums of exact bf16 products: within a few f32 roundings of Σ|a·b| per element
    closeScaled(host(out), ref, mag, 1e-5, 'C', [m, n]);
  });

  it('leaves products that are not its kind to the verified path: M and N over 64, f32 operands', () => {
    for (const { m, k, n, dtype } of [{ m: 300, k: 700, n: 65, dtype: 'bf16' }, { m: 300, k: 700, n: 40, dtype: 'f32' }] as const) {
      const a = pair(randn(r, m * k), [m, k], dtype);
      const b = pair(randn(r, k * n), [k, n], dtype);
      const ref = kernels.matmul({ a: a.cpu, b: b.cpu }).toArray();
      const { value, calls } = withEnv('INSTILL_CUDA_NEXT', 'default,skinny', () =>
        withOpProfile(() => host(kernels.matmul({ a: a.gpu, b: b.gpu }))));
      expect(calls[PART]).toBeUndefined();
      expect(calls.matmul).toBe(1);
      const mag = kernels.matmul({ a: abs(a.cpu), b: abs(b.cpu) }).toArray();
      closeScaled(value, ref, mag, 1e-2, `C (${dtype}, N ${n})`, [m, n]);
    }
  });

  it.each([
    { hidden: 200, inter: 344, acts: '1', alpha: 16 },
    { hidden: 198, inter: 342, acts: '1', alpha: 12 },
    { hidden: 200, inter: 344, acts: '0', alpha: 16 },
  ])('the model, hidden $hidden, intermediate $inter, bf16 activations $acts, alpha $alpha: the default\'s pass to rounding', async ({ hidden, inter, acts, alpha }) => {
    const m = pieceLoraModel(pieceModelConfig(hidden, inter), 41, (i, n) => 0.05 * Math.cos(0.23 * i + n.length), { alpha });
    await withEnv('INSTILL_BF16_ACTIVATIONS', acts, async () => {
      const plain = await withEnv('INSTILL_CUDA_NEXT', 'default', () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
      const skinny = await withEnv('INSTILL_CUDA_NEXT', 'default,skinny', () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
      const worst = expectNearPass(skinny.value, plain.value, 'skinny', 1e-4);
      console.log(`skinny (hidden ${hidden}, intermediate ${inter}, bf16 activations ${acts}, s ${alpha / 8}): ${gradBitsDiffer(skinny.value, plain.value)} gradient elements differ in bits, worst ${worst.toExponential(2)}`);
      expect(plain.parts.some((p) => p.includes('narrow product'))).toBe(false);
      // u in every forward (2 layers: the two groups, o and down, but down's u where its A is f32: intermediate 342
      // leaves no spare rows for a bf16 A below W) and g, dA, dB in every backward, where the operands are bf16
      for (const op of ['lora_group_forward', 'lora_linear_forward', 'lora_group_backward', 'lora_linear_backward']) {
        expect(skinny.calls[`${op}/narrow product, split K (next)`] ?? 0, op).toBeGreaterThanOrEqual(acts === '1' ? 2 : 0);
      }
      // dA and dB read s·g and s·u in bf16 only where s is a power of two (fewer_packs), else f32 (cuBLASLt's)
      expect(skinny.calls['lora_group_backward/narrow product, split K (next)'], 'g, dA, dB of the groups').toBeGreaterThanOrEqual(acts === '1' && alpha === 16 ? 12 : 4);
    });
    m.dispose();
  });
});
