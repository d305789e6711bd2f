// INSTILL_CUDA_NEXT=narrow on the GPU: LoRA's four narrow products on lora_narrow.cu's kernels (u, g, dA, dB),
// against the CPU, f32 and bf16 activations (the cases of test/cuda/ops.test.ts's verified lora tests).
// A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen, like test/cuda.
import { describe, it } from 'vitest';

import { rng, seed } from '../../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { hasCuda, LORA_BF16_CASES, LORA_CASES, loraBf16, loraForwardBackward } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=narrow', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  it.each(LORA_CASES)('loraLinear forward + backward N=$n $inF→$outF r=$rank bias=$bias (w bf16, kernels: narrow)', (c) => loraForwardBackward(r, c, 'narrow'));

  it.each(LORA_BF16_CASES)('loraLinear with bf16 x, y, dy, dx N=$n $inF→$outF r=$rank bias=$bias (kernels: narrow)', (c) => loraBf16(r, c, 'narrow'));
});
