// INSTILL_CUDA_NEXT=swiglu_pack on the GPU (with lora_group): swiglu's backward writes dgate and dup straight into
// the MLP group's packed dy (native/cuda/swiglu.cu's packed kernels; ops/swiglu.h's dgu), instead of into their own
// tensors that lora_group then copies; and, with bf16 activations, its forward writes h straight into down_proj's
// packed x (out_packed; ops/lora_linear.h's x_packed), which down_proj's backward reads in place. The packed kernel computes what the other kernels do and rounds once as the
// copy did (bf16: the same bf16 values copied; f32 activations: rounded where the pack rounded), so the pass gives
// lora_group's loss and gradients: bit for bit unless nvcc contracted a multiply-add differently in one kernel. Intermediate 344 (the 8-wide kernel) and 342 (the
// element kernel), bf16 and f32 activations. A file of its own (test/cuda/common.ts says why); skipped where no
// GPU is seen, like test/cuda.
import { describe, expect, it } from 'vitest';

import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { DEFAULT_BEFORE_GROUPS, PIECE_BATCH as batch, expectSamePass, hasCuda, pieceLoraModel, pieceModelConfig } from '../common.js';

const config = (intermediate: number) => pieceModelConfig(200, intermediate);

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=swiglu_pack', () => {
  it.each([
    { f: 344, acts: '1' },
    { f: 342, acts: '1' },
    { f: 344, acts: '0' },
  ])('intermediate $f, bf16 activations $acts: lora_group\'s results, without its pack of gate and up\'s dy', async ({ f, acts }) => {
    const m = pieceLoraModel(config(f), 23, (i, n) => 0.05 * Math.cos(0.29 * i + n.length));
    await withEnv('INSTILL_BF16_ACTIVATIONS', acts, async () => {
      const group = await withEnv('INSTILL_CUDA_NEXT', `${DEFAULT_BEFORE_GROUPS},lora_group`, () => withOpProfile(() => m.lossAndGrads(batch)));
      const packed = await withEnv('INSTILL_CUDA_NEXT', `${DEFAULT_BEFORE_GROUPS},lora_group,swiglu_pack`, () => withOpProfile(() => m.lossAndGrads(batch)));
      // The same arithmetic in two kernels: the same bits unless nvcc contracted a multiply-add differently in one
      // (then a bf16 step here and there): held to 1e-3, and whether the bits matched is printed.
      const { differ, worst } = expectSamePass(packed.value, group.value);
      console.log(`swiglu_pack (intermediate ${f}, bf16 activations ${acts}): ${differ} gradient elements differ in bits from lora_group's, worst ${worst.toExponential(2)}`);
      // the MLP group's backward packed no dy (q, k, v's still does), and swiglu's backward ran once a layer
      expect(packed.calls['lora_group_backward/pack dy']).toBe(2);
      expect(group.calls['lora_group_backward/pack dy']).toBe(4);
      expect(packed.calls.swiglu_backward).toBe(2);
      // with bf16 activations h is written into down_proj's packed x: only o_proj packs its x (f32: both still do)
      expect(packed.calls['lora_linear_forward/pack x']).toBe(acts === '1' ? 2 : 4);
      expect(group.calls['lora_linear_forward/pack x']).toBe(4);
    });
    m.dispose();
  });
});
