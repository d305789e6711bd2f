// rmsnorm: forward and backward (dx, dw) against float64 finite differences, on an odd shape.
import { describe, expect, it } from 'vitest';
import { Tensor, handleOf } from '../../../src/tensor.js';
import { roundBf16 } from '../../../bench/kernels/reference.js';
import { checkNormG, checkNormU } from '../../helpers/norm_lora.js';
import { addon, arr, bf16, errCode, f32, randn, relErr } from './helpers.js';

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
    const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
    expect(bits(arr(b.y))).toEqual(bits(roundBf16(arr(f.y))));
    expect(bits(arr(b.rstd))).toEqual(bits(arr(f.rstd)));
    const x16 = handleOf(Tensor.from(x, [N, C], { dtype: 'bf16' }));
    expect(errCode(() => A.opRmsnorm(x16, f32(w, [C]), eps))).toMatch(/^E_DTYPE.*'x'/);
  });

  it('into a packed x with s·u besides (y_packed, u_a): the plain bf16 norm, s·u against float64, nothing else written', () => {
    checkNormU('cpu', { n: 9, c: 41, ld: 56, aRows: 60, lda: 43, row0: 5, rows: 7, scale: 0.5 }, 11);
    checkNormU('cpu', { n: 3, c: 16, ld: 24, aRows: 8, lda: 16, row0: 0, rows: 8, scale: -3 }, 12);
  });

  it('backward into a packed dy with s·g besides (dx_packed, g_b): the same dx and copy, s·g against float64, nothing else written', () => {
    checkNormG('cpu', { n: 9, c: 41, ld: 56, bRows: 50, ldb: 70, col0: 41, rows: 7, scale: 0.5, accumulate: true }, 13);
    checkNormG('cpu', { n: 3, c: 16, ld: 24, bRows: 16, ldb: 24, col0: 16, rows: 8, scale: -2, accumulate: false }, 14);
  });

  it('a packed dy and s·g: bad arguments are errors', () => {
    const A = addon();
    const x = f32(randn(6, 1), [2, 3]), w = f32([1, 1, 1], [3]), dy = f32(randn(6, 2), [2, 3]);
    const rstd = A.opRmsnorm(x, w, 1e-5).rstd, dx = f32(new Float32Array(6), [2, 3]);
    const packed = handleOf(Tensor.from(new Float32Array(16), [2, 8], { dtype: 'bf16' }));
    const b = (rows: number, cols: number) => bf16(new Float32Array(rows * cols), [rows, cols]);
    expect(errCode(() => A.opRmsnormBackwardPacked(dy, x, w, rstd, dx, false, packed, b(2, 8), 3, 2, 1))).toMatch(/^E_SHAPE.*'g_b' has 2 rows/);
    expect(errCode(() => A.opRmsnormBackwardPacked(dy, x, w, rstd, dx, false, packed, b(3, 8), 7, 2, 1))).toMatch(/^E_SHAPE.*columns 7\.\.9 of 'g_b'/);
    expect(errCode(() => A.opRmsnormBackwardPacked(dy, x, w, rstd, dx, false, packed, b(3, 8), 0, 6, 1))).toMatch(/^E_SHAPE.*'dx_packed' has 8 columns/);
    expect(errCode(() => A.opRmsnormBackwardPacked(dy, x, w, rstd, dx, false, packed, f32(new Float32Array(24), [3, 8]), 0, 2, 1))).toMatch(/^E_DTYPE.*'g_b'/);
    expect(errCode(() => A.opRmsnormBackwardPacked(dy, x, w, rstd, dx, false, packed, b(3, 8), 0, 2, Infinity))).toMatch(/^E_ARG.*'g_scale'/);
  });

  it('a packed x and s·u: bad arguments are errors', () => {
    const A = addon();
    const x = f32(randn(6, 1), [2, 3]), w = f32([1, 1, 1], [3]);
    const packed = (cols: number) => handleOf(Tensor.from(new Float32Array(2 * cols), [2, cols], { dtype: 'bf16' }));
    const a = handleOf(Tensor.from(new Float32Array(12), [4, 3], { dtype: 'bf16' }));
    expect(errCode(() => A.opRmsnormPacked(x, w, 1e-5, packed(2)))).toMatch(/^E_SHAPE.*'y_packed'/);
    expect(errCode(() => A.opRmsnormPacked(x, w, 1e-5, packed(5), a, 1, 3, 1))).toMatch(/^E_SHAPE.*'y_packed' has 5 columns/);
    expect(errCode(() => A.opRmsnormPacked(x, w, 1e-5, packed(8), a, 2, 3, 1))).toMatch(/^E_SHAPE.*rows 2\.\.5 of 'u_a'/);
    expect(errCode(() => A.opRmsnormPacked(x, w, 1e-5, packed(8), a, 0, 0, 1))).toMatch(/^E_SHAPE.*'u_a'/);
    expect(errCode(() => A.opRmsnormPacked(x, w, 1e-5, packed(8), f32(new Float32Array(12), [4, 3]), 0, 2, 1))).toMatch(/^E_DTYPE.*'u_a'/);
    expect(errCode(() => A.opRmsnormPacked(x, w, 1e-5, packed(8), a, 0, 2, NaN))).toMatch(/^E_ARG.*'u_scale'/);
    expect(errCode(() => A.opRmsnormPacked(x, w, 1e-5, packed(8), a, 0.5, 2, 1))).toMatch(/^E_ARG.*integers/);
  });

  it('bad arguments are errors', () => {
    const A = addon();
    expect(errCode(() => A.opRmsnorm(f32(new Float32Array(6), [2, 3]), f32([1, 1], [2]), 1e-5))).toMatch(/^E_SHAPE.*'w'/);
    expect(errCode(() => A.opRmsnorm(f32(new Float32Array(6), [2, 3]), f32([1, 1, 1], [3]), 0))).toMatch(/^E_ARG.*eps/);
  });
});
