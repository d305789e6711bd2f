// INSTILL_CUDA_NEXT=group_fork on the GPU. lora_group's forward queues the products of the members narrower than its
// first (the q/k/v group's k and v, beside q) on the side stream, then the first's on the main stream, and the main
// stream waits for the side's before the op returns: the three products share their waves (run 18: k's and v's
// products, OUT 512, took a wave each at ~290 TFLOPS).
//
// The same products compute the same values, so each pass must give the default's results (the bits, or 1e-3 if
// cuBLASLt chose another algorithm on the side stream's workspace: expectSamePass; the bits that differ are printed),
// pass after pass, with and without side_grads (both use the side stream); once more with INSTILL_CUDA_SIDE_DELAY_US
// (each SideWork's work waits 200 µs on the side stream first: a missing join shows; test/cuda/next/side_grads.test.ts).
//
// test/cuda_host checks the plumbing on the fake device, which runs side work as late as the joins allow
// (model_check.cpp: without the op's join, k and v are read unwritten). A file of its own (test/cuda/common.ts says
// why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { PIECE_BATCH, expectSamePass, hasCuda, pieceLoraModel, pieceModelConfig } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=group_fork', () => {
  it.each([
    { acts: '1', extra: '' },
    { acts: '1', extra: ',side_grads,dqkv_pack,attn_pack' },
    { acts: '0', extra: '' },
    { acts: '1', extra: ',side_grads', delay: '200' },
  ])('bf16 activations $acts, pieces "$extra", side delay $delay us: the default\'s pass, three times over', async ({ acts, extra, delay }) => {
    const config = { ...pieceModelConfig(256, 344), head_dim: 64, num_attention_heads: 4, num_key_value_heads: 1 };
    const m = pieceLoraModel(config, 67, (i, n) => 0.05 * Math.cos(0.29 * i + n.length));
    await withEnv('INSTILL_BF16_ACTIVATIONS', acts, async () => {
      const plain = await withEnv('INSTILL_CUDA_NEXT', `default${extra}`, () => m.lossAndGrads(PIECE_BATCH));
      for (let k = 0; k < 3; ++k) {
        if (delay) {
          const late = await withEnv('INSTILL_CUDA_SIDE_DELAY_US', delay, () =>
            withEnv('INSTILL_CUDA_NEXT', `default${extra},group_fork`, () => m.lossAndGrads(PIECE_BATCH)));
          const { differ, worst } = expectSamePass(late, plain);
          console.log(`group_fork (pieces "${extra}", side delay ${delay} us), pass ${k + 1}: ${differ} gradient elements differ in bits, worst ${worst.toExponential(2)}`);
          continue;
        }
        const forked = await withEnv('INSTILL_CUDA_NEXT', `default${extra},group_fork`, () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
        const { differ, worst } = expectSamePass(forked.value, plain);
        console.log(`group_fork (bf16 activations ${acts}, pieces "${extra}"), pass ${k + 1}: ${differ} gradient elements differ in bits, worst ${worst.toExponential(2)}`);
        // k's and v's products (OUT 64) still run, on the side stream, under their names: 2 layers
        expect(forked.calls['lora_group_forward/y_i = [x | s u] [W_i | B]^T, OUT 64']).toBe(4);
        expect(forked.calls['lora_group_forward/y_i = [x | s u] [W_i | B]^T, OUT 256']).toBe(2);
      }
    });
    m.dispose();
  });
});
