// INSTILL_CUDA_NEXT=group_wide on the GPU (native/cuda/lora_group.cu's wide_forward): lora_group's forward as one
// product over every member's rows of the kept matrix (y = [x | s u] [W_1 | B ; ... ; W_m | B]^T) into scratch, each
// y_i copied out of its columns, where that takes fewer waves of the SMs than a product per member. At these sizes
// every group is a wave or less a member, so both groups (q, k, v and gate, up) take it. The same sums of the same
// bf16 operands, but cuBLASLt may pick another algorithm for the wider product (another order of f32 sums, so a y
// rounded the other way now and then): the default's loss and gradients to that noise, and how many bits differ is
// printed. bf16 activations (bf16 y) and f32 ones (f32 y). test/cuda_host/lora_group_check.cpp checks the host code
// (the bits, the rule's boundary, members with a bias left alone) on a fake device. A file of its own
// (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { PIECE_BATCH, expectNearPass, gradBitsDiffer, hasCuda, pieceLoraModel, pieceModelConfig } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=group_wide', () => {
  it.each([
    { hidden: 200, inter: 344, acts: '1' },
    { hidden: 198, inter: 342, acts: '1' },
    { hidden: 200, inter: 344, acts: '0' },
  ])('hidden $hidden, intermediate $inter, bf16 activations $acts: one product a group, the default\'s results', async ({ hidden, inter, acts }) => {
    const m = pieceLoraModel(pieceModelConfig(hidden, inter), 43, (i, n) => 0.05 * Math.sin(0.41 * i + n.length));
    await withEnv('INSTILL_BF16_ACTIVATIONS', acts, async () => {
      const pass = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
      const plain = await pass('default'), wide = await pass('default,group_wide');
      const worst = expectNearPass(wide.value, plain.value, 'group_wide', 1e-4);
      console.log(`group_wide (hidden ${hidden}, intermediate ${inter}, bf16 activations ${acts}): ${gradBitsDiffer(wide.value, plain.value)} gradient elements differ in bits, worst ${worst.toExponential(2)}`);
      // 2 layers × 2 groups: one product and one copy-out each, no product per member
      const one = 'lora_group_forward/y = [x | s u] [W_1 | B ; ... ; W_m | B]^T, every member in one product (next)';
      expect(wide.calls[one]).toBe(4);
      expect(wide.calls['lora_group_forward/each y_i copied out of the one product (next)']).toBe(4);
      expect(wide.parts.filter((p) => p.startsWith('lora_group_forward/y_i'))).toEqual([]);
      expect(plain.calls[one]).toBeUndefined();
      // the default's per-member products, named by width: q (hidden), k and v (2 × 50), gate and up (inter)
      const widths = plain.parts.filter((p) => p.startsWith('lora_group_forward/y_i')).map((p) => Number(p.split('OUT ')[1])).sort((a, b) => a - b);
      expect(widths).toEqual([...new Set([200, 100, inter])].sort((a, b) => a - b));
      expect(plain.calls[`lora_group_forward/y_i = [x | s u] [W_i | B]^T, OUT ${inter}`]).toBe(4);
    });
    m.dispose();
  });
});
