// rmsnorm: forward and backward (dx, dw) against float64 finite differences, on an odd shape.
import { describe, expect, it } from 'vitest';
import { Tensor, handleOf } from '../../../src/tensor.js';
import { roundBf16 } from '../../../bench/kernels/reference.js';
import { addon, arr, bf16, bits, errCode, f32, randn, relErr } from './helpers.js';

function ref(x: Float64Array, w: Float64Array, N: number, C: number, eps: number): Float64Array {
  const y = new Float64Array(N * C);
  for (let n = 0; n < N; n++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[n * C + c] ** 2;
    const r = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) y[n * C + c] = x[n * C + c] * r * w[c];
  }
  return y;
}

describe('rmsnorm op vs float64', () => {
  it('9 x 41, forward and backward', () => {
    const N = 9, C = 41, eps = 1e-5;
    const x = randn(N * C, 1, 3), w = randn(C, 2), dy = randn(N * C, 3);
    const A = addon();
    const fw = A.opRmsnorm(f32(x, [N, C]), f32(w, [C]), eps);
    const x64 = Float64Array.from(x), w64 = Float64Array.from(w);
    expect(relErr(arr(fw.y), ref(x64, w64, N, C, eps))).toBeLessThan(1e-6);
    const bw = A.opRmsnormBackward(f32(dy, [N, C]), f32(x, [N, C]), f32(w, [C]), fw.rstd);
    const L = () => ref(x64, w64, N, C, eps).reduce((a, v, i) => a + v * dy[i], 0);
    const fd = (t: Float64Array) => t.map((o, i) => {
      t[i] = o + 1e-6;
      const lp = L();
      t[i] = o - 1e-6;
      const lm = L();
      t[i] = o;
      return (lp - lm) / 2e-6;
    });
    expect(relErr(arr(bw.dx), fd(x64))).toBeLessThan(1e-5);
    expect(relErr(arr(bw.dw), fd(w64))).toBeLessThan(1e-5);
  });

  it('a zero row gives finite output (eps keeps rstd finite)', () => {
    const A = addon();
    const fw = A.opRmsnorm(f32(new Float32Array(8), [2, 4]), f32([1, 1, 1, 1], [4]), 1e-6);
    expect(Array.from(arr(fw.y)).every((v) => v === 0)).toBe(true);
    expect(Array.from(arr(fw.rstd)).every(Number.isFinite)).toBe(true);
  });

  it('a bf16 y is the f32 y rounded once, bit for bit (rstd unchanged); only y may be bf16', () => {
    const N = 7, C = 44, eps = 1e-5;
    const x = randn(N * C, 4, 2), w = randn(C, 5);
    const A = addon();
    const f = A.opRmsnorm(f32(x, [N, C]), f32(w, [C]), eps);
    const b = A.opRmsnorm(f32(x, [N, C]), f32(w, [C]), eps, 'bf16');
    expect(b.y.dtype).toBe('bf16');
    expect(bits(arr(b.y))).toEqual(bits(roundBf16(arr(f.y))));
    expect(bits(arr(b.rstd))).toEqual(bits(arr(f.rstd)));
    const x16 = handleOf(Tensor.from(x, [N, C], { dtype: 'bf16' }));
    expect(errCode(() => A.opRmsnorm(x16, f32(w, [C]), eps))).toMatch(/^E_DTYPE.*'x'/);
  });

  // ops/rmsnorm.h's y_packed and dx_packed (norm_pack: the q/k/v and gate/up groups' packed x, o_proj's and
  // down_proj's packed dy): the plain op's values rounded to bf16 into the packed buffer's first C columns, the columns
  // past them as they were
  it('packed outputs: y and dx rounded into the first C columns, the rest untouched', () => {
    const A = addon();
    const N = 5, C = 37, ld = 48, eps = 1e-5;
    const x = randn(N * C, 21), w = randn(C, 22, 0.5), dy = randn(N * C, 23), dx0 = randn(N * C, 24);
    const fill = Float32Array.from({ length: N * ld }, (_, i) => 1 + (i % 7));  // (exact in bf16)
    const plain = A.opRmsnorm(f32(x, [N, C]), f32(w, [C]), eps);
    const yp = bf16(fill, [N, ld]);
    const rstd = A.opRmsnormPacked(f32(x, [N, C]), f32(w, [C]), eps, yp);
    expect(bits(arr(rstd))).toEqual(bits(arr(plain.rstd)));
    const y = arr(plain.y), got = arr(yp);
    for (let r = 0; r < N; ++r) {
      expect(bits(got.subarray(r * ld, r * ld + C)), `y row ${r}`).toEqual(bits(roundBf16(y.subarray(r * C, (r + 1) * C))));
      expect(Array.from(got.subarray(r * ld + C, (r + 1) * ld)), `row ${r} past C`).toEqual(Array.from(fill.subarray(r * ld + C, (r + 1) * ld)));
    }
    // the backward: dx written (accumulate false) or added to dx0 (true), and its bf16 rounding packed
    const want = arr(A.opRmsnormBackward(f32(dy, [N, C]), f32(x, [N, C]), f32(w, [C]), plain.rstd).dx);
    for (const accumulate of [false, true]) {
      const dx = f32(dx0, [N, C]), dp = bf16(fill, [N, ld]);
      A.opRmsnormBackwardPacked(f32(dy, [N, C]), f32(x, [N, C]), f32(w, [C]), plain.rstd, dx, accumulate, dp);
      const d = arr(dx), packed = arr(dp);
      expect(relErr(d, Float64Array.from(want, (v, i) => (accumulate ? dx0[i] + v : v)))).toBeLessThan(1e-6);
      for (let r = 0; r < N; ++r) {
        expect(bits(packed.subarray(r * ld, r * ld + C)), `dx row ${r}`).toEqual(bits(roundBf16(d.subarray(r * C, (r + 1) * C))));
        expect(Array.from(packed.subarray(r * ld + C, (r + 1) * ld))).toEqual(Array.from(fill.subarray(r * ld + C, (r + 1) * ld)));
      }
    }
  });

  it('a packed x: bad arguments are errors', () => {
    const A = addon();
    const x = f32(randn(6, 1), [2, 3]), w = f32([1, 1, 1], [3]);
    const packed = (cols: number) => handleOf(Tensor.from(new Float32Array(2 * cols), [2, cols], { dtype: 'bf16' }));
    expect(errCode(() => A.opRmsnormPacked(x, w, 1e-5, packed(2)))).toMatch(/^E_SHAPE.*'y_packed'/);
  });

  it('bad arguments are errors', () => {
    const A = addon();
    expect(errCode(() => A.opRmsnorm(f32(new Float32Array(6), [2, 3]), f32([1, 1], [2]), 1e-5))).toMatch(/^E_SHAPE.*'w'/);
    expect(errCode(() => A.opRmsnorm(f32(new Float32Array(6), [2, 3]), f32([1, 1, 1], [3]), 0))).toMatch(/^E_ARG.*eps/);
  });
});
