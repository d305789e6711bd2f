// INSTILL_CUDA_NEXT=side_grads on the GPU. The model's LoRA backwards queue their dA and dB products (and their
// copies out) on a second, lower-priority stream, so they run beside the rest of the backward instead of in its
// path; the model makes the main stream wait for them only where it rewrites a packed dy they read (the residual's
// two, gate/up's and q/k/v's: each a layer's worth of work or more after they were queued) and at the end. The allocator keeps every block they read or allocated out of use until
// their event has passed (native/cuda/runtime.cu).
//
// The same kernels compute the same values, so each pass must give the default's results (the bits, or 1e-3 if
// cuBLASLt chose another algorithm on the side stream's workspace: expectSamePass; the bits that differ are printed),
// pass after pass: a block reused too early, or a join in the wrong place, would show as other values in a later pass.
//
// The baseline leaves side_grads out by name (promoted in run 20: `default` has it). Cases: bf16 activations (the GPU's
// default: s·g and s·u read from the packed buffers), with dqkv_pack and attn_pack (the default since run 22: the
// group's dy and o_proj's x written in place by the attention) and without them, f32 activations (g and u in f32 scratch), and a
// 1500-token row, where the side stream's products overlap the attention's backward. Two cases again with
// INSTILL_CUDA_SIDE_DELAY_US (native/cuda/runtime.cu): each SideWork's work waits 200 µs on the side stream first, so
// that it runs as late as the joins allow, as on the fake device (a missing join or a block reused too early then
// shows here too; without the delay a small model's side work is done long before anything rewrites what it reads).
// Those passes run without the op profile, whose marks could order the streams.
//
// test/cuda_host checks the model's joins on the fake device, which runs the side work as late as they allow
// (model_check.cpp). A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { PIECE_BATCH, expectSamePass, hasCuda, pieceLoraModel, pieceModelConfig } from '../common.js';

const longIds = Array.from({ length: 1500 }, (_, i) => (i * 53 + 7) % 301);

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=side_grads', () => {
  it.each([
    { acts: '1', extra: '', long: false },
    { acts: '1', extra: ',-dqkv_pack,-attn_pack', long: false },
    { acts: '0', extra: '', long: false },
    { acts: '1', extra: '', long: true },
    { acts: '1', extra: ',-dqkv_pack,-attn_pack', long: false, delay: '200' },
    { acts: '1', extra: '', long: true, delay: '200' },
  ])('bf16 activations $acts, pieces "$extra", 1500 tokens $long, side delay $delay us: the default\'s pass, three times over', async ({ acts, extra, long, delay }) => {
    const config = { ...pieceModelConfig(256, 344), head_dim: 64, num_attention_heads: 4, num_key_value_heads: 2 };
    const batch = long ? { inputIds: [longIds], labels: [longIds] } : PIECE_BATCH;
    const m = pieceLoraModel(config, 61, (i, n) => 0.05 * Math.sin(0.23 * i + n.length));
    await withEnv('INSTILL_BF16_ACTIVATIONS', acts, async () => {
      const plain = await withEnv('INSTILL_CUDA_NEXT', `default,-side_grads${extra}`, () => m.lossAndGrads(batch));
      for (let k = 0; k < 3; ++k) {
        if (delay) {
          const side = await withEnv('INSTILL_CUDA_SIDE_DELAY_US', delay, () =>
            withEnv('INSTILL_CUDA_NEXT', `default${extra}`, () => m.lossAndGrads(batch)));
          const { differ, worst } = expectSamePass(side, plain);
          console.log(`side_grads (pieces "${extra}", ${long ? 1500 : 150} tokens, side delay ${delay} us), pass ${k + 1}: ${differ} gradient elements differ in bits, worst ${worst.toExponential(2)}`);
          continue;
        }
        const side = await withEnv('INSTILL_CUDA_NEXT', `default${extra}`, () => withOpProfile(() => m.lossAndGrads(batch)));
        const { differ, worst } = expectSamePass(side.value, plain);
        console.log(`side_grads (bf16 activations ${acts}, pieces "${extra}", ${long ? 1500 : 150} tokens), pass ${k + 1}: ${differ} gradient elements differ in bits, worst ${worst.toExponential(2)}`);
        // the products still run, on the side stream, under their own names (2 layers: each group's, o's and down's)
        expect(Object.keys(side.calls).some((p) => p.startsWith('lora_group_backward/dA'))).toBe(true);
        expect(Object.keys(side.calls).some((p) => p.startsWith('lora_linear_backward/dB'))).toBe(true);
      }
    });
    m.dispose();
  });

  it('INSTILL_CUDA_SIDE_DELAY_US other than microseconds from 0 to 1e6 is E_ARG', async () => {
    const m = pieceLoraModel(pieceModelConfig(256, 344), 61, (i, n) => 0.05 * Math.sin(0.23 * i + n.length));
    for (const bad of ['abc', '-1', '2e6']) {
      await expect(withEnv('INSTILL_CUDA_SIDE_DELAY_US', bad, () =>
        withEnv('INSTILL_CUDA_NEXT', 'default,side_grads', () => m.lossAndGrads(PIECE_BATCH)))).rejects.toMatchObject({ code: 'E_ARG' });
    }
    m.dispose();
  });
});
