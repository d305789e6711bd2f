// INSTILL_CUDA_NEXT=norm_pack on the GPU: the norms' backward (native/cuda/rmsnorm.cu, ops/rmsnorm.h's dx_packed)
// round the residual stream's gradient into o_proj's and down_proj's packed dy as they write it, and those
// backward read it there (ops/lora_linear.h's dy_packed) instead of packing dres themselves; with bf16 activations
// their forward writes xn1, xn2 into the q/k/v and gate/up groups' packed x (y_packed; ops/lora_group.h's x_packed). The same bf16 values
// as the pack made (rounded once from the same f32), so the pass gives lora_group + swiglu_pack's results: held
// to 1e-3 (bits printed). Hidden 200 (the 4-wide kernel) and 198 (the element kernel), bf16 and f32 activations,
// and o_proj without an adapter (down_proj alone reads it). A file of its own (test/cuda/common.ts says why);
// skipped where no GPU is seen, like test/cuda.
import { describe, expect, it } from 'vitest';

import { LORA_TARGETS } from '../../../src/model/model.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { DEFAULT_BEFORE_GROUPS, PIECE_BATCH as batch, expectSamePass, hasCuda, pieceLoraModel, pieceModelConfig } from '../common.js';

const config = (hidden: number) => pieceModelConfig(hidden, 344);
const base = `${DEFAULT_BEFORE_GROUPS},lora_group,swiglu_pack`;

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=norm_pack', () => {
  it.each([
    { hidden: 200, acts: '1', o: true },
    { hidden: 198, acts: '1', o: true },
    { hidden: 200, acts: '0', o: true },
    { hidden: 200, acts: '1', o: false },
  ])('hidden $hidden, bf16 activations $acts, o_proj adapted $o: the results without it, and no pack of dres', async ({ hidden, acts, o }) => {
    const m = pieceLoraModel(config(hidden), 29, (i, n) => 0.05 * Math.sin(0.41 * i + n.length),
      { targets: LORA_TARGETS.filter((t) => o || t !== 'o_proj') });
    await withEnv('INSTILL_BF16_ACTIVATIONS', acts, async () => {
      const plain = await withEnv('INSTILL_CUDA_NEXT', base, () => withOpProfile(() => m.lossAndGrads(batch)));
      const packed = await withEnv('INSTILL_CUDA_NEXT', `${base},norm_pack`, () => withOpProfile(() => m.lossAndGrads(batch)));
      const { differ, worst } = expectSamePass(packed.value, plain.value);
      console.log(`norm_pack (hidden ${hidden}, bf16 activations ${acts}, o_proj ${o}): ${differ} gradient elements differ in bits, worst ${worst.toExponential(2)}`);
      // o_proj's and down_proj's backward packed no dy with the piece (2 layers)
      expect(plain.calls['lora_linear_backward/pack dy']).toBe(o ? 4 : 2);
      expect(packed.calls['lora_linear_backward/pack dy']).toBeUndefined();
      // and with bf16 activations (every linear adapted) the norms write xn1, xn2 into the groups' packed x
      expect(plain.calls['lora_group_forward/pack x']).toBe(4);
      expect(packed.calls['lora_group_forward/pack x']).toBe(acts === '1' && o ? undefined : 4);
    });
    m.dispose();
  });
});
