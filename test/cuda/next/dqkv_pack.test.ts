// INSTILL_CUDA_NEXT=dqkv_pack on the GPU. In the backward, rope writes dq and dk straight into the q/k/v group's
// packed dy (ops/rope.h's out_packed; rope_qk_kernel's rows `ldo` apart), and the attention writes dv there too
// (ops/attention.h's dv_packed). dv goes through the dK/dV sum kernel, the lean kernel's stores or the f32 fallback,
// each with the row stride `lddv16`. lora_group then packs no dy.
//
// The same bf16 values land in the same columns, so the pass gives the default's results: the bits, or 1e-3 if nvcc
// contracted something differently (expectSamePass; the bits that differ are printed).
//
// Cases:
// - head dim 64 at 150 tokens (dK/dV split into per-head partials, then summed);
// - 4300 tokens with 8 KV heads (not split: the lean kernel stores dv itself);
// - head dim 50 (the f32 kernels on copies, then packed);
// - f32 activations (nothing packed);
// - (stop 28's review) head dim 128, and with `-flash_lean` the pipelined flash kernels' dK/dV stores.
//
// test/cuda_host checks the plumbing bit for bit on the fake device (model_check.cpp). A file of its own
// (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { PIECE_BATCH, expectSamePass, hasCuda, pieceLoraModel, pieceModelConfig } from '../common.js';

const longIds = Array.from({ length: 4300 }, (_, i) => (i * 53 + 7) % 301);

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=dqkv_pack', () => {
  it.each([
    { d: 64, heads: 4, kv: 2, long: false, acts: '1' },
    { d: 64, heads: 16, kv: 8, long: true, acts: '1' },
    { d: 50, heads: 4, kv: 2, long: false, acts: '1' },
    { d: 64, heads: 4, kv: 2, long: false, acts: '0' },
    { d: 128, heads: 4, kv: 2, long: false, acts: '1' },
    { d: 64, heads: 16, kv: 8, long: true, acts: '1', base: 'default,-dqkv_pack,-flash_lean' },
  ])('head dim $d, $heads/$kv heads, 4300 tokens $long, bf16 activations $acts, base $base: the default\'s pass, no dy packed', async ({ d, heads, kv, long, acts, base = 'default,-dqkv_pack' }) => {
    const config = { ...pieceModelConfig(heads * d, 344), head_dim: d, num_attention_heads: heads, num_key_value_heads: kv };
    const batch = long ? { inputIds: [longIds], labels: [longIds] } : PIECE_BATCH;
    const m = pieceLoraModel(config, 59, (i, n) => 0.05 * Math.cos(0.19 * i + n.length));
    await withEnv('INSTILL_BF16_ACTIVATIONS', acts, async () => {
      const plain = await withEnv('INSTILL_CUDA_NEXT', base, () => withOpProfile(() => m.lossAndGrads(batch)));
      const packed = await withEnv('INSTILL_CUDA_NEXT', `${base},dqkv_pack`, () => withOpProfile(() => m.lossAndGrads(batch)));
      const { differ, worst } = expectSamePass(packed.value, plain.value);
      console.log(`dqkv_pack (head dim ${d}, ${heads}/${kv} heads, ${long ? 4300 : 150} tokens, bf16 activations ${acts}, ${base}): ${differ} gradient elements differ in bits, worst ${worst.toExponential(2)}`);
      // the q/k/v group's dy packed by lora_group (2 layers) without the piece, and with it where the attention's
      // activations are f32 (not packed then); the MLP group's dy is SwiGLU's own either way (swiglu_pack)
      expect(plain.calls['lora_group_backward/pack dy']).toBe(2);
      expect(packed.calls['lora_group_backward/pack dy']).toBe(acts === '1' ? undefined : 2);
      expect(packed.calls.attention_backward).toBe(2);
    });
    m.dispose();
  });
});
