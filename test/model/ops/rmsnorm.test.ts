// rmsnorm: forward and backward (dx, dw) against float64 finite differences, on an odd shape.
import { describe, expect, it } from 'vitest';
import { addon, arr, errCode, f32, randn, relErr } from './helpers.js';

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

  it('bad arguments are errors', () => {
    const A = addon();
    expect(errCode(() => A.opRmsnorm(f32(new Float32Array(6), [2, 3]), f32([1, 1], [2]), 1e-5))).toMatch(/^E_SHAPE.*'w'/);
    expect(errCode(() => A.opRmsnorm(f32(new Float32Array(6), [2, 3]), f32([1, 1, 1], [3]), 0))).toMatch(/^E_ARG.*eps/);
  });
});
