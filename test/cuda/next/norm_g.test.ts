// INSTILL_CUDA_NEXT=norm_g on the GPU: the norm backwards that write o_proj's and down_proj's packed dy (norm_pack) also
// write their LoRA s·g = s · dy·B there (ops/rmsnorm.h's g_b; native/cuda/rmsnorm.cu's rmsnorm_dx_g_kernel, mma.sync
// over 16-row tiles, or where its shapes do not fit, the row kernel and then the linear's own product), so those
// linears' backwards make no g (ops/lora_linear.h's sg_written).
//   - The op against float64 on awkward shapes (rows off the 16-row tile, C off the 256-column chunk, B's columns inside
//     a wider matrix, g 8 to 64 wide, dx written and accumulated, and two that take the fallback), the packed dy
//     poisoned first: dx and its bf16 copy the bits of the same call without g_b, s·g within half a bf16 ulp plus f32
//     summation, the columns past it untouched (test/helpers/norm_lora.ts, which the CPU's op test shares).
//   - The model's pass against the default's (s·g summed in another order: to 1e-3, the bits that differ printed), with
//     o_proj's and down_proj's g products gone from the op profile.
// (The values written besides the product may be an ulp off the plain kernel's, printed: ptxas may contract a multiply
// and an add in one kernel and not the other; test/helpers/norm_lora.ts's expectSameValues.)
// test/cuda_host (model_check.cpp) checks the model's plumbing on the fake device bit for bit. A file of its own
// (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, it } from 'vitest';

import { checkNormG } from '../../helpers/norm_lora.js';
import { expectPieceMovesProducts, hasCuda, pieceLoraModel, pieceModelConfig } from '../common.js';

const G_PRODUCT = 'lora_linear_backward/g = dy B, s g into pd';
const FALLBACK = 'rmsnorm_backward/g = dy B (the norm\'s g_b)';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=norm_g', () => {
  it.each([
    { n: 37, c: 208, ld: 232, bRows: 216, ldb: 264, col0: 208, rows: 16, scale: 2, accumulate: true },
    { n: 16, c: 2048, ld: 2064, bRows: 2064, ldb: 2064, col0: 2048, rows: 16, scale: 2, accumulate: true },
    { n: 1000, c: 2048, ld: 2112, bRows: 2048, ldb: 8208, col0: 8192, rows: 16, scale: 0.5, accumulate: false },
    { n: 5, c: 4112, ld: 4184, bRows: 4112, ldb: 4200, col0: 4112, rows: 64, scale: 1, accumulate: true },
    { n: 33, c: 96, ld: 104, bRows: 100, ldb: 97, col0: 9, rows: 8, scale: -4, accumulate: false },
    { n: 21, c: 200, ld: 232, bRows: 200, ldb: 224, col0: 200, rows: 24, scale: 2, accumulate: true },  // C % 16: fallback
    { n: 19, c: 128, ld: 200, bRows: 130, ldb: 210, col0: 128, rows: 72, scale: 2, accumulate: false },  // 72 wide: fallback
  ])('$n x $c, g $rows wide from column $col0 of $bRows x $ldb, s $scale, accumulate $accumulate: dx\'s bits, s·g against float64', (cs) => {
    const worst = checkNormG('cuda', cs, 211 + cs.n);
    console.log(`norm_g op ${cs.n} x ${cs.c}, g ${cs.rows}: worst s·g error ${worst.toFixed(3)} of its bound`);
  });

  it.each([
    { hidden: 208, fused: true },
    { hidden: 200, fused: false },
  ])('hidden $hidden: the default\'s pass to rounding, no g product in o_proj\'s and down_proj\'s backward', async ({ hidden, fused }) => {
    const m = pieceLoraModel(pieceModelConfig(hidden, 344), 43, (i, n) => 0.05 * Math.cos(0.41 * i + n.length));
    // o_proj's and down_proj's g products (2 layers) gone; where the norm's kernel cannot take the shape, its fallback's
    await expectPieceMovesProducts(`norm_g (hidden ${hidden})`, m, 'norm_g', { [G_PRODUCT]: [4, undefined], [FALLBACK]: [undefined, fused ? undefined : 4] });
    m.dispose();
  });
});
