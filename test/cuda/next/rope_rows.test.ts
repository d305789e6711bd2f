// INSTILL_CUDA_NEXT=rope_rows on the GPU (native/cuda/rope.cu's rope_qk_rows_kernel): rope_qk's one pass over q and k
// a warp a token, each lane rotating four columns of a head at a time with their four angles made once in registers,
// in place of a block a token with its angles in shared memory. The same θ, sincosf, rotation and rounding, so the
// bits of rope_qk's kernel, forward and backward: head dims 8 (half / 4 = 1: a lane a head), 64 (the 1B model's q and
// k), 128 and 256 (half / 4 = 32: a warp a head), a head count that leaves a token's last round of heads part empty,
// positions up to ~7000, and D 12 and 10, which rope_rows does not take (half / 4 not a power of two, half odd). Then a
// bf16 model's pass, bit for bit. The op profile's part says which kernel ran. A file of its own (test/cuda/common.ts
// says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { handleOf } from '../../../src/tensor.js';
import { native } from '../../../src/native.js';
import { rng } from '../../../bench/kernels/reference.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { PIECE_BATCH, expectBits, gradBitsDiffer, hasCuda, host, pieceLoraModel, pieceModelConfig, ropePairInputs } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=rope_rows', () => {
  it.each([
    { n: 29, h: 3, h2: 1, d: 8, takes: true },
    { n: 2048, h: 32, h2: 8, d: 64, takes: true },
    { n: 301, h: 7, h2: 2, d: 128, takes: true },
    { n: 300, h: 4, h2: 2, d: 256, takes: true },
    { n: 29, h: 3, h2: 1, d: 12, takes: false },
    { n: 37, h: 5, h2: 5, d: 10, takes: false },
  ])('n $n, $h + $h2 heads of $d: rope_qk\'s bits, forward and backward (taken: $takes)', ({ n, h, h2, d, takes }) => {
    const A = native();
    const { x, x2, pos, inv } = ropePairInputs(rng(5303 + d + n), n, h, h2, d);
    for (const backward of [false, true]) {
      const run = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () =>
        withOpProfile(() => A.opRopePair(handleOf(x.gpu), handleOf(x2.gpu), handleOf(pos.gpu), handleOf(inv.gpu), backward)));
      const plain = run('default,-rope_rows'), rows = run('default,rope_rows');
      const part = `${backward ? 'rope_backward' : 'rope_forward'}/q and k in one pass, a warp a token (next)`;
      expect(plain.parts).not.toContain(part);
      expect(rows.parts.includes(part)).toBe(takes);
      expectBits(host(rows.value.out), host(plain.value.out), `q, backward=${backward}`, { shape: [n, h, d] });
      expectBits(host(rows.value.out2), host(plain.value.out2), `k, backward=${backward}`, { shape: [n, h2, d] });
    }
  });

  it('a bf16 model\'s pass: the bits of the pass without it, one rope call each way a layer a warp a token', async () => {
    const config = { ...pieceModelConfig(256, 344), head_dim: 64, num_attention_heads: 4, num_key_value_heads: 2 };
    const m = pieceLoraModel(config, 73, (i, name) => 0.05 * Math.sin(0.41 * i + name.length));
    const pass = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
    const plain = await pass('default,-rope_rows'), rows = await pass('default,rope_rows');
    expect(rows.value.loss).toBe(plain.value.loss);
    expect(gradBitsDiffer(rows.value, plain.value)).toBe(0);
    expect(rows.calls['rope_forward/q and k in one pass, a warp a token (next)']).toBe(2);
    expect(rows.calls['rope_backward/q and k in one pass, a warp a token (next)']).toBe(2);
    expect(plain.calls['rope_forward/q and k in one pass (next)']).toBe(2);
    m.dispose();
  });
});
