// INSTILL_CUDA_NEXT=delta_rows on the GPU: with bf16 activations the attention backward's Δ (rowsum(dO ∘ O), one float
// a query row and head) is made a warp a token row, every head of it, from 16-byte loads, in place of a warp a (row,
// head) with 2-byte loads and, where O sits in o_proj's packed x (attn_pack), two 64-bit divisions a row. It adds in
// the other kernel's order (native/cuda/attention_simple.cu says how), so Δ, and with it dq, dk, dv and the whole pass,
// must keep their bits. Cases: head dims 64 and 128, head counts that leave the last round of a row's heads part empty
// (6 heads at 4 a round, 5 at 2), segments of awkward lengths, a 2100-token row; and the model's pass, where O is
// read from o_proj's packed x (rows longer than H·D). The op profile's part name says which kernel ran. A file of its
// own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { handleOf } from '../../../src/tensor.js';
import { native } from '../../../src/native.js';
import { rng } from '../../../bench/kernels/reference.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { PIECE_BATCH, attentionInputs, expectBits, gradBitsDiffer, hasCuda, host, pieceLoraModel, pieceModelConfig } from '../common.js';

const ROWS = 'attention_backward/delta = rowsum(dO * O), a warp a row (next)';
const PLAIN = 'attention_backward/delta = rowsum(dO * O)';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=delta_rows', () => {
  it.each([
    { segs: [0, 13, 50, 51, 90], h: 6, kvh: 3, d: 64 },
    { segs: [0, 150, 301], h: 5, kvh: 1, d: 128 },
    { segs: [0, 1, 2100], h: 8, kvh: 2, d: 64 },
  ])('segments $segs, $h/$kvh heads of $d: dq, dk and dv with the plain kernel\'s bits', ({ segs, h, kvh, d }) => {
    const A = native();
    const n = segs[segs.length - 1];
    const { q, k, v, dout, cu, scale } = attentionInputs(rng(977 + d + h), segs, h, kvh, d, 'bf16');
    const [qg, kg, vg, dg, cug] = [q, k, v, dout, cu].map((t) => handleOf(t.gpu));
    const fwd = A.opAttention(qg, kg, vg, cug, scale, 0);
    const backward = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() =>
      A.opAttentionBackward(dg, qg, kg, vg, fwd.out, fwd.lse, cug, scale, 0)));
    const plain = backward('default,-delta_rows'), rows = backward('default,delta_rows');
    expect(plain.calls[PLAIN]).toBe(1);
    expect(plain.calls[ROWS]).toBeUndefined();
    expect(rows.calls[ROWS]).toBe(1);
    expect(rows.calls[PLAIN]).toBeUndefined();
    for (const key of ['dq', 'dk', 'dv'] as const) {
      const heads = key === 'dq' ? h : kvh;
      const got = host(rows.value[key]) as Float32Array;
      expect(got.every(Number.isFinite), key).toBe(true);
      expectBits(got, host(plain.value[key]) as Float32Array, key, { shape: [n, heads, d], segs });
    }
  });

  it('the model\'s pass (O read from o_proj\'s packed x, rows longer than H·D): the same bits; f32 activations keep the plain kernel', async () => {
    const config = { ...pieceModelConfig(6 * 64, 344), head_dim: 64, num_attention_heads: 6, num_key_value_heads: 2 };
    const m = pieceLoraModel(config, 67, (i, name) => 0.05 * Math.sin(0.29 * i + name.length));
    const plain = await withEnv('INSTILL_CUDA_NEXT', 'default,-delta_rows', () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
    const rows = await withEnv('INSTILL_CUDA_NEXT', 'default,delta_rows', () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
    expect(rows.calls[ROWS]).toBe(2);  // (two layers)
    expect(plain.calls[ROWS]).toBeUndefined();
    expect(rows.value.loss).toBe(plain.value.loss);
    expect(gradBitsDiffer(rows.value, plain.value)).toBe(0);
    const f32 = await withEnv('INSTILL_BF16_ACTIVATIONS', '0', () =>
      withEnv('INSTILL_CUDA_NEXT', 'default,delta_rows', () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH))));
    expect(f32.calls[ROWS]).toBeUndefined();
    expect(f32.calls[PLAIN]).toBe(2);
    m.dispose();
  });
});
