// INSTILL_CUDA_NEXT=ce_wide on the GPU (native/cuda/cross_entropy.cu): linear_cross_entropy's f32 logits in
// sub-chunks of up to 512 MiB instead of 256, so each pass over the head's W covers twice the rows. At V = 128256
// that is 1024 rows a sub-chunk instead of 512: 1500 kept rows of 1600 (every 16th ignored) take 2 logits products,
// not 3 (the op profile's part rows count them). The rows' arithmetic is the same; only the logits product's M
// changes (cuBLASLt may pick another algorithm for it), so the loss and dh must match the default's to f32 rounding,
// and the CPU's within bf16 tolerance. A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { kernels } from '../../../src/index.js';
import { randn, rng } from '../../../bench/kernels/reference.js';
import { relNorm } from '../../helpers/compare.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { BF16_TOL, close, hasCuda, host, pair } from '../common.js';

const LOGITS = 'linear_cross_entropy/logits = h W^T (a sub-chunk)';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=ce_wide', () => {
  it('V 128256: the f32 logits path\'s loss and dh in 2 logits products instead of 3, and the CPU\'s', () => {
    const r = rng(2411);
    const n = 1600, c = 40, v = 128256;
    const h = pair(randn(r, n * c), [n, c]);
    const w = pair(randn(r, v * c, 0.2), [v, c], 'bf16');
    const T = pair(Int32Array.from({ length: n }, (_, i) => (i % 16 === 5 ? -100 : Math.floor(r() * v))), [n]);
    const run = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () =>
      withOpProfile(() => kernels.linearCrossEntropy({ h: h.gpu, w: w.gpu, targets: T.gpu })));
    // (on the f32 logits path: with ce_bf16, the default since run 20, the loss makes bf16 logits in one product)
    const plain = run('default,-ce_bf16');
    const wide = run('default,-ce_bf16,ce_wide');
    expect(plain.calls[LOGITS]).toBe(3);
    expect(wide.calls[LOGITS]).toBe(2);
    expect(wide.value.count).toBe(1500);
    expect(Math.abs(wide.value.loss - plain.value.loss) / plain.value.loss).toBeLessThan(1e-6);
    // dlogits are rounded to bf16 from f32 logits that may differ in their last bits: a bf16 step here and there
    const dhWide = host(wide.value.dh), dhPlain = host(plain.value.dh);
    expect(relNorm(dhWide, dhPlain)).toBeLessThan(1e-3);
    const ref = kernels.linearCrossEntropy({ h: h.cpu, w: w.cpu, targets: T.cpu });
    expect(Math.abs(wide.value.loss - ref.loss) / ref.loss).toBeLessThan(BF16_TOL);
    close(dhWide, ref.dh!.toArray(), BF16_TOL, 'dh');
  });
});
