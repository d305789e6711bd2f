// INSTILL_CUDA_NEXT=factor_pack on the GPU (native/model/llama.cpp's pack_factors, ops/lora_pack.h,
// native/cuda/lora_pack.cu, bf16_pack.cu's pack_bf16_table): at the start of a pass the model rounds every B and A
// into the kept matrices in one launch, from a job list kept on the device, and the forwards write none. The same
// bf16 values as each forward wrote, so the pass must give the default's bits. The adapters change between passes
// (as an optimizer changes them: in place, the kept matrices kept), with a pass in between on other values, so a copy
// the piece failed to write shows as that other version's. Hidden 200 and 198, intermediate 344 and 342 (down_proj's
// W without the spare rows for A), bf16 and f32 activations, and with fewer_packs. test/cuda_host checks the host
// code on a fake device (model_check.cpp). A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { LORA_TARGETS, randomModel } from '../../../src/model/model.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { DEFAULT_BEFORE_RUN17, PIECE_BATCH, expectSamePass, hasCuda, pieceModelConfig } from '../common.js';


describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=factor_pack', () => {
  it.each([
    { hidden: 200, inter: 344, acts: '1', extra: '' },
    { hidden: 198, inter: 342, acts: '1', extra: '' },
    { hidden: 200, inter: 344, acts: '0', extra: '' },
    { hidden: 200, inter: 344, acts: '1', extra: ',fewer_packs' },
  ])('hidden $hidden, intermediate $inter, bf16 activations $acts$extra: the default\'s bits with the adapters changed between passes, one pack a pass', async ({ hidden, inter, acts, extra }) => {
    const m = randomModel(pieceModelConfig(hidden, inter), { seed: 37, device: 'cuda', dtype: 'bf16' });
    m.addLora({ r: 8, alpha: 16, targetModules: [...LORA_TARGETS], seed: 5 });
    const names = Object.keys(m.adapterWeights());
    // version k of every factor (B nonzero, so that the low-rank term reaches y)
    const set = (k: number) => m.setAdapterWeights(Object.fromEntries(names.map((n) => {
      const size = m.adapterWeights()[n].length;
      return [n, Float32Array.from({ length: size }, (_, i) => 0.05 * Math.sin(0.31 * i + 1.7 * k + n.length))];
    })));
    const base = `${DEFAULT_BEFORE_RUN17}${extra}`, piece = `${DEFAULT_BEFORE_RUN17},factor_pack${extra}`;
    await withEnv('INSTILL_BF16_ACTIVATIONS', acts, async () => {
      const pass = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
      set(0);
      await pass(base);  // copies W into the kept matrices
      set(2);
      await pass(piece);
      set(1);
      const on = await pass(piece);
      set(3);
      await pass(base);
      set(1);
      const off = await pass(base);
      const { differ, worst } = expectSamePass(on.value, off.value);
      console.log(`factor_pack (hidden ${hidden}, intermediate ${inter}, bf16 activations ${acts}${extra}): ${differ} gradient elements differ in bits, worst ${worst.toExponential(2)}`);
      expect(differ, 'the same bf16 copies of the factors, so the same bits').toBe(0);
      expect(on.calls['lora_pack_factors']).toBe(1);
      expect(off.calls['lora_pack_factors']).toBeUndefined();
      // the forwards' own packs of B and A: each group's one launch and o_proj's, down_proj's (2 layers)
      const groupPack = 'lora_group_forward/pack B and A into the group\'s kept matrix (one launch)';
      const linearPacks = ['lora_linear_forward/pack B into the kept [W | B], A below W', 'lora_linear_forward/pack B into the kept [W | B]'];
      expect(off.calls[groupPack]).toBe(4);
      expect(linearPacks.reduce((k, p) => k + (off.calls[p] ?? 0), 0)).toBe(4);
      expect(on.calls[groupPack]).toBeUndefined();
      for (const p of linearPacks) expect(on.calls[p], p).toBeUndefined();
    });
    m.dispose();
  });
});
