// INSTILL_CUDA_NEXT=bf16_beta on the GPU: dx += into a bf16 dx by cuBLASLt itself (beta = 1, bf16 C), against the CPU.
// A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen, like test/cuda.
import { describe, it } from 'vitest';

import { rng, seed } from '../../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { hasCuda, LORA_BF16_CASES, loraBf16 } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=bf16_beta', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  it.each(LORA_BF16_CASES)('loraLinear with bf16 x, y, dy, dx N=$n $inF→$outF r=$rank bias=$bias (kernels: bf16_beta)', (c) => loraBf16(r, c, 'bf16_beta'));
});
