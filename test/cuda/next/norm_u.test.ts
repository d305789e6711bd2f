// INSTILL_CUDA_NEXT=norm_u on the GPU: the norms before the q/k/v and gate/up groups write s·u into the groups' packed x
// besides xn (ops/rmsnorm.h's u_a; native/cuda/rmsnorm.cu's rmsnorm_u_kernel, mma.sync over 16-row tiles, or where its
// shapes do not fit, the row kernel and then the group's own product), so the groups' forwards make no u.
//   - The op against float64 on awkward shapes (rows off the 16-row tile, C off the 256-column chunk, A's rows inside a
//     wider matrix at an offset, u's width 8 to 64, and two that take the fallback: C % 16 != 0, 72 columns), the
//     packed x poisoned first: y's columns the plain bf16 norm's bits, rstd's too, s·u within half a bf16 ulp plus f32
//     summation, the columns past it untouched (test/helpers/norm_lora.ts, which the CPU's op test shares).
//   - The model's pass against the default's (s·u summed in another order: to 1e-3, the bits that differ printed),
//     with the groups' u products gone from the op profile.
// (The values written besides the product may be an ulp off the plain kernel's, printed: ptxas may contract a multiply
// and an add in one kernel and not the other; test/helpers/norm_lora.ts's expectSameValues.)
// test/cuda_host (model_check.cpp) checks the model's plumbing on the fake device bit for bit. A file of its own
// (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, it } from 'vitest';

import { checkNormU } from '../../helpers/norm_lora.js';
import { expectPieceMovesProducts, hasCuda, pieceLoraModel, pieceModelConfig } from '../common.js';

const U_PRODUCT = 'lora_group_forward/u = x [A_1 ; ...]^T, pack s u';
const FALLBACK = 'rmsnorm_forward/u = x A^T (the norm\'s u_a)';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=norm_u', () => {
  it.each([
    { n: 37, c: 208, ld: 264, aRows: 300, lda: 216, row0: 251, rows: 48, scale: 2 },
    { n: 16, c: 2048, ld: 2096, aRows: 3120, lda: 2096, row0: 3072, rows: 48, scale: 2 },
    { n: 1000, c: 2048, ld: 2080, aRows: 2032, lda: 2080, row0: 2000, rows: 32, scale: 0.5 },
    { n: 5, c: 4112, ld: 4184, aRows: 64, lda: 4120, row0: 0, rows: 64, scale: 1 },
    { n: 33, c: 96, ld: 104, aRows: 9, lda: 96, row0: 1, rows: 8, scale: -4 },
    { n: 21, c: 200, ld: 232, aRows: 30, lda: 208, row0: 3, rows: 24, scale: 2 },   // C % 16: the row kernel, then gemm()
    { n: 19, c: 128, ld: 200, aRows: 80, lda: 128, row0: 8, rows: 72, scale: 2 },    // 72 columns: the same fallback
  ])('$n x $c, u $rows wide from row $row0 of $aRows x $lda, s $scale: the plain norm\'s bits, s·u against float64', (cs) => {
    const worst = checkNormU('cuda', cs, 101 + cs.n);
    console.log(`norm_u op ${cs.n} x ${cs.c}, u ${cs.rows}: worst s·u error ${worst.toFixed(3)} of its bound`);
  });

  it.each([
    { hidden: 208, fused: true },
    { hidden: 200, fused: false },
  ])('hidden $hidden: the default\'s pass to rounding, no u product in the groups', async ({ hidden, fused }) => {
    const m = pieceLoraModel(pieceModelConfig(hidden, 344), 41, (i, n) => 0.05 * Math.sin(0.37 * i + n.length));
    // the two groups' u products (2 layers) gone; where the norm's kernel cannot take the shape, its fallback's instead
    await expectPieceMovesProducts(`norm_u (hidden ${hidden})`, m, 'norm_u', { [U_PRODUCT]: [4, undefined], [FALLBACK]: [undefined, fused ? undefined : 4] });
    m.dispose();
  });
});
