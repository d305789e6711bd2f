// INSTILL_CUDA_NEXT=swiglu_u on the GPU: SwiGLU's forward, writing h into down_proj's packed x (swiglu_pack), also writes
// down_proj's LoRA s·u there (ops/swiglu.h's u_a; native/cuda/swiglu.cu's swiglu_forward_u_kernel, mma.sync over
// 16-row tiles with A's rows from below down_proj's W, or where its shapes do not fit the packed kernel and then
// gemm()), so down_proj's forward makes no u (ops/lora_linear.h's su_written).
//   - The op against float64 on awkward shapes (rows off the 16-row tile, F off the 256-column chunk, A's rows inside a
//     taller matrix, R 8 to 64, and two that take the fallback), the packed x poisoned first: h the bits of the same
//     call without u_a, s·u within half a bf16 ulp plus f32 summation, the columns past it untouched
//     (test/helpers/norm_lora.ts, which the CPU's op test shares).
//   - The model's pass against the default's (s·u summed in another order: to 1e-3, the bits that differ printed),
//     with down_proj's u product gone from the op profile (its W has room for A below it at intermediate 352, not 340).
// (The values written besides the product may be an ulp off the plain kernel's, printed: ptxas may contract a multiply
// and an add in one kernel and not the other; test/helpers/norm_lora.ts's expectSameValues.)
// test/cuda_host (model_check.cpp) checks the model's plumbing on the fake device bit for bit. A file of its own
// (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, it } from 'vitest';

import { checkSwigluU } from '../../helpers/norm_lora.js';
import { expectPieceMovesProducts, hasCuda, pieceLoraModel, pieceModelConfig } from '../common.js';

const U_PRODUCT = 'lora_linear_forward/u = x A^T, pack s u';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=swiglu_u', () => {
  it.each([
    { n: 37, f: 336, ld: 360, aRows: 340, row0: 320, rows: 16, scale: 2 },
    { n: 300, f: 8192, ld: 8208, aRows: 2064, row0: 2048, rows: 16, scale: 2 },
    { n: 5, f: 4112, ld: 4176, aRows: 64, row0: 0, rows: 64, scale: 0.5 },
    { n: 33, f: 96, ld: 104, aRows: 9, row0: 1, rows: 8, scale: -4 },
    { n: 21, f: 200, ld: 232, aRows: 30, row0: 3, rows: 24, scale: 2 },   // F % 16: the packed kernel, then gemm()
    { n: 19, f: 128, ld: 200, aRows: 80, row0: 8, rows: 72, scale: 2 },   // 72 columns: the same fallback
  ])('$n x $f, u $rows wide from row $row0 of $aRows, s $scale: h\'s bits, s·u against float64', (cs) => {
    const worst = checkSwigluU('cuda', cs, 401 + cs.n);
    console.log(`swiglu_u op ${cs.n} x ${cs.f}, u ${cs.rows}: worst s·u error ${worst.toFixed(3)} of its bound`);
  });

  it.each([
    { inter: 352, taken: true },
    { inter: 340, taken: false },
  ])('intermediate $inter: the default\'s pass to rounding, down_proj making no u where A lies below its W', async ({ inter, taken }) => {
    const m = pieceLoraModel(pieceModelConfig(208, inter), 53, (i, n) => 0.05 * Math.cos(0.37 * i + n.length));
    // of o_proj's and down_proj's u products (2 layers), o_proj's left where down_proj's A lies below its W
    await expectPieceMovesProducts(`swiglu_u (intermediate ${inter})`, m, 'swiglu_u', { [U_PRODUCT]: [4, taken ? 2 : 4] });
    m.dispose();
  });
});
