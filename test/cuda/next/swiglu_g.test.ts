// INSTILL_CUDA_NEXT=swiglu_g on the GPU: SwiGLU's backward, writing the gate/up group's packed dy (swiglu_pack), also
// writes the group's LoRA s·g there (ops/swiglu.h's g_b; native/cuda/swiglu.cu's swiglu_backward_g_kernel, mma.sync
// over 16-row tiles, each warp on its member's diagonal B block, or where its shapes do not fit the packed kernel and
// then gemm() a block at a time), so the group's backward makes no g (ops/lora_group.h's sg_written).
//   - The op against float64 on awkward shapes (rows off the 16-row tile, F off the 256-column chunk, the B blocks inside
//     a wider matrix, R 8 to 32, and two that take the fallback: F % 16 != 0, R not a multiple of 8), the packed dy
//     poisoned first: dgate and dup the bits of the same call without g_b, each block's s·g within half a bf16 ulp plus
//     f32 summation, the columns past it untouched (test/helpers/norm_lora.ts, which the CPU's op test shares).
//   - The model's pass against the default's (s·g summed in another order: to 1e-3, the bits that differ printed),
//     with the MLP group's g product gone from the op profile.
// (The values written besides the product may be an ulp off the plain kernel's, printed: ptxas may contract a multiply
// and an add in one kernel and not the other; test/helpers/norm_lora.ts's expectSameValues.)
// test/cuda_host (model_check.cpp) checks the model's plumbing on the fake device bit for bit. A file of its own
// (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, it } from 'vitest';

import { checkSwigluG } from '../../helpers/norm_lora.js';
import { expectPieceMovesProducts, hasCuda, pieceLoraModel, pieceModelConfig } from '../common.js';

const G_PRODUCT = 'lora_group_backward/g = dy [B] (block-diagonal), s g into pd';
const FALLBACK = 'swiglu_backward/g = dy [B] (swiglu\'s g_b)';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=swiglu_g', () => {
  it.each([
    { n: 37, f: 336, ld: 736, ldb: 240, col0: 208, rank: 16, scale: 2 },
    { n: 300, f: 8192, ld: 16416, ldb: 2096, col0: 2048, rank: 16, scale: 2 },
    { n: 5, f: 4112, ld: 8304, ldb: 100, col0: 7, rank: 32, scale: 0.5 },
    { n: 33, f: 96, ld: 216, ldb: 40, col0: 24, rank: 8, scale: -4 },
    { n: 21, f: 200, ld: 424, ldb: 64, col0: 30, rank: 12, scale: 2 },   // R % 8: the packed kernel, then gemm()
    { n: 19, f: 100, ld: 232, ldb: 48, col0: 0, rank: 16, scale: 2 },    // F % 16: the same fallback
  ])('$n x $f, R $rank from column $col0 of 2F x $ldb, s $scale: dgate and dup\'s bits, s·g against float64', (cs) => {
    const worst = checkSwigluG('cuda', cs, 307 + cs.n);
    console.log(`swiglu_g op ${cs.n} x ${cs.f}, R ${cs.rank}: worst s·g error ${worst.toFixed(3)} of its bound`);
  });

  it.each([
    { inter: 352, fused: true },
    { inter: 344, fused: false },
  ])('intermediate $inter: the default\'s pass to rounding, no g product in the MLP group\'s backward', async ({ inter, fused }) => {
    const m = pieceLoraModel(pieceModelConfig(208, inter), 47, (i, n) => 0.05 * Math.sin(0.43 * i + n.length));
    // of the two groups' g products (2 layers), the q/k/v group's left; where SwiGLU's kernel cannot take the shape, its
    // fallback's (a product a diagonal block)
    await expectPieceMovesProducts(`swiglu_g (intermediate ${inter})`, m, 'swiglu_g', { [G_PRODUCT]: [4, 2], [FALLBACK]: [undefined, fused ? undefined : 2] });
    m.dispose();
  });
});
