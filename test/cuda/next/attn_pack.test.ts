// INSTILL_CUDA_NEXT=attn_pack on the GPU: with bf16 activations the attention writes its output straight into o_proj's
// packed x (ops/attention.h's out_packed: the flash and lean kernels' output rows `ldo16` apart,
// native/cuda/attention_kernels.cuh), which o_proj's forward and backward read in place and the attention's backward
// reads O from (Δ's kernel). So o_proj packs no x. The same values reach the same products; with fewer_packs
// (the default) o_proj's s·u is also written by u's product into that packed x and read there by dB, as down_proj's
// already is. That rounds once where the f32 u did, so a bf16 step may move here and there (expectNearPass, the bits
// printed, as fewer_packs' test). Head dim 64 (the lean kernels) and 50 (the f32 kernels on f32 copies, the output
// then packed), bf16 and f32 activations (f32: nothing packed); and (stop 28's review) head dim 128 and, with
// `-flash_lean`, the pipelined flash kernels' strided stores, which the lean kernels otherwise stand in for. test/cuda_host checks the model's plumbing bit for bit
// on the fake device (model_check.cpp). A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { PIECE_BATCH, expectNearPass, gradBitsDiffer, hasCuda, pieceLoraModel, pieceModelConfig } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=attn_pack', () => {
  it.each([
    { d: 64, acts: '1' },
    { d: 50, acts: '1' },
    { d: 64, acts: '0' },
    { d: 128, acts: '1' },
    { d: 64, acts: '1', base: 'default,-attn_pack,-flash_lean' },
  ])('head dim $d, bf16 activations $acts, base $base: the default\'s pass, o_proj packing no x', async ({ d, acts, base = 'default,-attn_pack' }) => {
    const config = { ...pieceModelConfig(4 * d, 344), head_dim: d };
    const m = pieceLoraModel(config, 53, (i, n) => 0.05 * Math.sin(0.31 * i + n.length));
    await withEnv('INSTILL_BF16_ACTIVATIONS', acts, async () => {
      const plain = await withEnv('INSTILL_CUDA_NEXT', base, () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
      const packed = await withEnv('INSTILL_CUDA_NEXT', `${base},attn_pack`, () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
      const worst = expectNearPass(packed.value, plain.value, 'attn_pack', 1e-4);
      console.log(`attn_pack (head dim ${d}, bf16 activations ${acts}, ${base}): ${gradBitsDiffer(packed.value, plain.value)} gradient elements differ in bits, worst ${worst.toExponential(2)}`);
      // o_proj's x packed (2 layers; down_proj's h is SwiGLU's, packed by neither) only without the piece, with bf16
      // activations; f32 activations pack as before
      expect(plain.calls['lora_linear_forward/pack x']).toBe(acts === '1' ? 2 : 4);
      expect(packed.calls['lora_linear_forward/pack x']).toBe(acts === '1' ? undefined : 4);
      expect(packed.calls.attention_forward).toBe(2);
      expect(packed.calls.attention_backward).toBe(2);
    });
    m.dispose();
  });
});
