// INSTILL_CUDA_NEXT=residual on the GPU: lora_linear's residual added inside the product (cuBLASLt's C != D).
// A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen, like test/cuda.
import { describe, it } from 'vitest';

import { rng, seed } from '../../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { hasCuda, loraResidual, RESIDUAL_CASES } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=residual', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  it.each(RESIDUAL_CASES)('loraLinear with a residual N=$n $inF→$outF r=$rank bias=$bias (kernels: residual)', (c) => loraResidual(r, c, 'residual'));
});
