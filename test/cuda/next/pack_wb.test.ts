// INSTILL_CUDA_NEXT=pack_wb on the GPU: lora_linear's [W | B] in one pass (bf16_pack.cu), against the CPU.
// A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen, like test/cuda.
import { describe, it } from 'vitest';

import { rng, seed } from '../../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { hasCuda, LORA_CASES, loraForwardBackward } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=pack_wb', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  it.each(LORA_CASES)('loraLinear forward + backward N=$n $inF→$outF r=$rank bias=$bias (w bf16, kernels: pack_wb)', (c) => loraForwardBackward(r, c, 'pack_wb'));
});
