// INSTILL_CUDA_NEXT=fewer_packs on the GPU (native/cuda/lora_linear.cu, lora_group.cu): LoRA's products read the
// bf16 copies that exist already instead of having cuBLASLt's path pack f32 again — u = x·Aᵀ reads A below W,
// g = dy·B reads B from the kept [W | B] — and, with bf16 activations and s a power of two, g's product writes s·g
// into the packed dy in bf16 itself (no f32 g, no "pack s g") and dA reads it there with alpha 1, and dB reads s·u
// where the forward left it in the packed x (xn1, xn2, h: su_packed) instead of rounding u again. The same rounded
// operands, so the pass gives the default's results to f32-sum order: cuBLASLt may pick another algorithm for a bf16
// output, an alpha or another leading dimension, and with bf16 activations one s·u or s·g rounded the other way
// carries through these small models' layers (expectNearPass: the loss within 1e-4, as the forward's u may move;
// the bits that differ printed). test/cuda_host
// checks the host code bit for bit on a fake device (model_check.cpp, lora_group_check.cpp). Hidden 200 and 198,
// intermediate 344 and 342 (down_proj's W without the spare rows for A: u packs A as before), s = 2 and 1.5 (no
// power of two: s·g packed as before), bf16 and f32 activations. A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { DEFAULT_BEFORE_RUN17, PIECE_BATCH, expectNearPass, gradBitsDiffer, hasCuda, pieceLoraModel, pieceModelConfig } from '../common.js';


describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=fewer_packs', () => {
  it.each([
    { hidden: 200, inter: 344, acts: '1', alpha: 16 },
    { hidden: 198, inter: 342, acts: '1', alpha: 16 },
    { hidden: 200, inter: 344, acts: '1', alpha: 12 },
    { hidden: 200, inter: 344, acts: '0', alpha: 16 },
  ])('hidden $hidden, intermediate $inter, bf16 activations $acts, alpha $alpha (r 8): the default\'s results, s·g packed only where it must be', async ({ hidden, inter, acts, alpha }) => {
    const m = pieceLoraModel(pieceModelConfig(hidden, inter), 31, (i, n) => 0.05 * Math.sin(0.37 * i + n.length), { alpha });
    await withEnv('INSTILL_BF16_ACTIVATIONS', acts, async () => {
      const plain = await withEnv('INSTILL_CUDA_NEXT', DEFAULT_BEFORE_RUN17, () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
      const fewer = await withEnv('INSTILL_CUDA_NEXT', `${DEFAULT_BEFORE_RUN17},fewer_packs`, () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
      const worst = expectNearPass(fewer.value, plain.value, 'fewer_packs', 1e-4);
      const differ = gradBitsDiffer(fewer.value, plain.value);
      console.log(`fewer_packs (hidden ${hidden}, intermediate ${inter}, bf16 activations ${acts}, s ${alpha / 8}): ${differ} gradient elements differ in bits, worst ${worst.toExponential(2)}`);
      // s·g written by g's product (2 layers: o_proj and down_proj, and the two groups): with bf16 x and s = 2 only.
      // Packed, s·g serves only dx: the first layer's q/k/v group makes none (nothing below it reads it), so 3 of 4
      const direct = acts === '1' && alpha === 16;
      expect(plain.calls['lora_linear_backward/pack s g']).toBe(4);
      expect(plain.calls['lora_group_backward/pack s g']).toBe(3);
      expect(fewer.calls['lora_linear_backward/pack s g']).toBe(direct ? undefined : 4);
      expect(fewer.calls['lora_group_backward/pack s g']).toBe(direct ? undefined : 3);
      expect(fewer.calls['lora_linear_backward/g = dy B, s g into pd']).toBe(direct ? 4 : undefined);
      expect(fewer.calls['lora_group_backward/g = dy [B] (block-diagonal), s g into pd']).toBe(direct ? 4 : undefined);
    });
    m.dispose();
  });
});
