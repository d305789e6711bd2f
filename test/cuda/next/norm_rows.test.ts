// INSTILL_CUDA_NEXT=norm_rows on the GPU: rmsnorm's forward and dx kernels a warp a row (8 rows a block) in place of
// a block of 256 threads a row, where the vector path is taken (C a multiple of 4, 16-byte aligned rows). Lane l does
// the work of the block's threads l + 32k and sums as they do (native/cuda/rmsnorm.cu), so rstd, y and dx must keep
// their bits: f32 and bf16 y, y packed into a wider bf16 buffer, dx written and accumulated, with and without its
// packed bf16 copy. Widths: 2048 (the 1B model's), 1000 (a row's last round of chunks part empty), 4100 (beyond 4096:
// each lane's "threads" take two chunks or one), and 123 (no vector path: the block kernel, the piece not taken). The
// op profile's parts say which kernel ran. A file of its own (test/cuda/common.ts says why); skipped where no GPU is
// seen.
import { describe, expect, it } from 'vitest';

import { Tensor } from '../../../src/index.js';
import { native } from '../../../src/native.js';
import { handleOf } from '../../../src/tensor.js';
import { randn, rng } from '../../../bench/kernels/reference.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { PIECE_BATCH, expectBits, gradBitsDiffer, hasCuda, host, pieceLoraModel, pieceModelConfig } from '../common.js';

const FWD = 'rmsnorm_forward/a warp a row (next)';
const DX = 'rmsnorm_backward/dx, a warp a row (next)';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=norm_rows', () => {
  it.each([
    { n: 37, c: 2048 },
    { n: 29, c: 1000 },
    { n: 3, c: 4100 },
    { n: 11, c: 123 },
  ])('$n rows of $c: rstd, y (f32, bf16, packed) and dx (written, accumulated, packed) with the block kernels\' bits', ({ n, c }) => {
    const A = native();
    const r = rng(4401 + c);
    const gpu = (a: Float32Array, shape: number[]) => Tensor.from(a, shape).to('cuda');
    const x = gpu(randn(r, n * c, 3), [n, c]), w = gpu(randn(r, c), [c]), dy = gpu(randn(r, n * c), [n, c]);
    const start = randn(r, n * c);  // what an accumulated dx adds to
    const ld = c + 20;  // a packed buffer's row (ops/rmsnorm.h's y_packed and dx_packed: the first c columns written)
    const vec = c % 4 === 0;
    const pass = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() => {
      const f32 = A.opRmsnorm(handleOf(x), handleOf(w), 1e-5);
      const b16 = A.opRmsnorm(handleOf(x), handleOf(w), 1e-5, 'bf16');
      const packed = Tensor.zeros([n, ld], { dtype: 'bf16', device: 'cuda' });
      const rstdPacked = A.opRmsnormPacked(handleOf(x), handleOf(w), 1e-5, handleOf(packed));
      const bwd = A.opRmsnormBackward(handleOf(dy), handleOf(x), handleOf(w), f32.rstd);
      const acc = gpu(start, [n, c]);
      const dxp = Tensor.zeros([n, ld], { dtype: 'bf16', device: 'cuda' });
      A.opRmsnormBackwardPacked(handleOf(dy), handleOf(x), handleOf(w), f32.rstd, handleOf(acc), true, handleOf(dxp));
      return {
        y: host(f32.y), rstd: host(f32.rstd), y16: host(b16.y), packed: host(packed), rstdPacked: host(rstdPacked),
        dx: host(bwd.dx), dw: host(bwd.dw), acc: host(acc), dxp: host(dxp),
      };
    }));
    const plain = pass('default,-norm_rows'), rows = pass('default,norm_rows');
    expect(plain.calls[FWD]).toBeUndefined();
    expect(plain.calls[DX]).toBeUndefined();
    expect(rows.calls[FWD]).toBe(vec ? 3 : undefined);
    expect(rows.calls[DX]).toBe(vec ? 2 : undefined);
    for (const key of Object.keys(plain.value) as (keyof typeof plain.value)[]) {
      const got = rows.value[key];
      expect(Array.from(got).every(Number.isFinite), key).toBe(true);
      expectBits(got, plain.value[key], key);
    }
  });

  it('the model\'s pass (norm outputs into the groups\' packed x, the residual gradient accumulated and packed): the same bits', async () => {
    const config = { ...pieceModelConfig(256, 344), head_dim: 64, num_attention_heads: 4, num_key_value_heads: 2 };
    const m = pieceLoraModel(config, 71, (i, name) => 0.05 * Math.cos(0.37 * i + name.length));
    const plain = await withEnv('INSTILL_CUDA_NEXT', 'default,-norm_rows', () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
    const rows = await withEnv('INSTILL_CUDA_NEXT', 'default,norm_rows', () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
    expect(plain.calls[FWD]).toBeUndefined();
    expect(plain.calls.rmsnorm_forward).toBeGreaterThanOrEqual(5);  // (two layers' two norms and the final one)
    expect(rows.calls[FWD]).toBe(plain.calls.rmsnorm_forward);  // every one of them a warp a row
    expect(rows.calls[DX]).toBe(plain.calls.rmsnorm_backward);
    expect(rows.value.loss).toBe(plain.value.loss);
    expect(gradBitsDiffer(rows.value, plain.value)).toBe(0);
    m.dispose();
  });
});
