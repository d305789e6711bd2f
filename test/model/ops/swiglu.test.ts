// swiglu: forward and backward against float64, with large |gate| (exp overflow must give 0, not NaN).
import { beforeAll, describe, expect, it } from 'vitest';
import { runtime } from '../../../src/index.js';
import { isas, poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { Tensor, handleOf } from '../../../src/tensor.js';
import { roundBf16 } from '../../../bench/kernels/reference.js';
import { checkSwigluG, checkSwigluU } from '../../helpers/norm_lora.js';
import { addon, arr, bf16, errCode, f32, randn, relErr } from './helpers.js';

poisonAndRestoreIsa();

// The CPU runs each ISA's vector code (cpu/row_kernels.inc); 5 x 123 leaves a ragged tail.
describe.each(isas)('swiglu op vs float64 on %s', (isa) => {
  beforeAll(() => runtime.setIsa(isa));
  it('5 x 123 with extreme gates', () => {
    const n = 5 * 123;
    const g = randn(n, 1, 4), u = randn(n, 2), d = randn(n, 3);
    g[0] = -100; g[1] = 100; g[2] = -1e30; g[3] = 0;
    const A = addon();
    const out = arr(A.opSwiglu(f32(g, [5, 123]), f32(u, [5, 123])));
    const sig = (x: number) => 1 / (1 + Math.exp(-x));
    const ref = Float64Array.from(g, (x, i) => x * sig(x) * u[i]);
    expect(relErr(out, ref)).toBeLessThan(1e-6);
    const bw = A.opSwigluBackward(f32(d, [5, 123]), f32(g, [5, 123]), f32(u, [5, 123]));
    const dgRef = Float64Array.from(g, (x, i) => {
      const s = sig(x);
      return d[i] * u[i] * (s + x * s * (1 - s));
    });
    const duRef = Float64Array.from(g, (x, i) => d[i] * x * sig(x));
    expect(relErr(arr(bw.dgate), dgRef)).toBeLessThan(1e-6);
    expect(relErr(arr(bw.dup), duRef)).toBeLessThan(1e-6);
    expect(Array.from(arr(bw.dgate)).every(Number.isFinite)).toBe(true);
  });
});

describe.each(isas)('swiglu op on bf16 tensors on %s', (isa) => {
  beforeAll(() => runtime.setIsa(isa));
  // Every tensor bf16: the f32 math on the (exactly widened) inputs, each output rounded once; so the
  // f32 op on the same values, rounded, gives the same bits.
  it('7 x 61: the f32 results rounded once; mixed dtypes refused', () => {
    const shape = [7, 61], n = 7 * 61;
    const bf = (v: Float32Array) => handleOf(Tensor.from(v, shape, { dtype: 'bf16' }));
    const g = bf(randn(n, 11, 3)), u = bf(randn(n, 12)), d = bf(randn(n, 13));
    const wide = (h: ReturnType<typeof bf>) => f32(arr(h), shape);
    const round = (v: Float32Array) => Array.from(new Uint32Array(roundBf16(v).buffer));
    const bits = (h: ReturnType<typeof bf>) => Array.from(new Uint32Array(arr(h).buffer));
    const A = addon();
    const out = A.opSwiglu(g, u);
    expect(out.dtype).toBe('bf16');
    expect(bits(out)).toEqual(round(arr(A.opSwiglu(wide(g), wide(u)))));
    const bw = A.opSwigluBackward(d, g, u), bw32 = A.opSwigluBackward(wide(d), wide(g), wide(u));
    expect(bits(bw.dgate)).toEqual(round(arr(bw32.dgate)));
    expect(bits(bw.dup)).toEqual(round(arr(bw32.dup)));
    expect(errCode(() => A.opSwiglu(g, wide(u)))).toMatch(/E_DTYPE: 'up' must be bf16 like gate/);
  });
});

describe('swiglu forward into down_proj\'s packed x with its s·u (out_packed, u_a: INSTILL_CUDA_NEXT swiglu_u\'s op)', () => {
  it('the same h, s·u against float64, nothing else written', () => {
    checkSwigluU('cpu', { n: 5, f: 37, ld: 50, aRows: 9, row0: 2, rows: 7, scale: 0.5 }, 17);
    checkSwigluU('cpu', { n: 3, f: 16, ld: 24, aRows: 8, row0: 0, rows: 8, scale: -2 }, 18);
  });

  it('bad arguments are errors', () => {
    const A = addon();
    const bf = (rows: number, cols: number) => bf16(new Float32Array(rows * cols), [rows, cols]);
    const g = bf(2, 4), u = bf(2, 4), out = bf(2, 8);
    expect(errCode(() => A.opSwigluPacked(g, u, out, bf(3, 5), 0, 2, 1))).toMatch(/^E_SHAPE.*'u_a' must have F = 4 columns/);
    expect(errCode(() => A.opSwigluPacked(g, u, out, bf(3, 4), 2, 2, 1))).toMatch(/^E_SHAPE.*rows 2\.\.4 of 'u_a' \(3 rows/);
    expect(errCode(() => A.opSwigluPacked(g, u, out, bf(8, 4), 0, 5, 1))).toMatch(/^E_SHAPE.*'out_packed' has 8 columns/);
    expect(errCode(() => A.opSwigluPacked(g, u, out, f32(new Float32Array(12), [3, 4]), 0, 2, 1))).toMatch(/^E_DTYPE.*'u_a'/);
    expect(errCode(() => A.opSwigluPacked(g, u, out, bf(3, 4), 0, 2, NaN))).toMatch(/^E_ARG.*'u_scale'/);
  });
});

describe('swiglu backward into the gate/up group\'s packed dy with its s·g (dgu, g_b: INSTILL_CUDA_NEXT swiglu_g\'s op)', () => {
  it('the same dgate and dup, each block\'s s·g against float64, nothing else written', () => {
    checkSwigluG('cpu', { n: 5, f: 37, ld: 90, ldb: 60, col0: 41, rank: 6, scale: 0.5 }, 15);
    checkSwigluG('cpu', { n: 3, f: 16, ld: 48, ldb: 32, col0: 16, rank: 8, scale: -2 }, 16);
  });

  it('bad arguments are errors', () => {
    const A = addon();
    const bf = (rows: number, cols: number) => bf16(new Float32Array(rows * cols), [rows, cols]);
    const d = bf(2, 4), g = bf(2, 4), u = bf(2, 4), dgu = bf(2, 12);
    expect(errCode(() => A.opSwigluBackwardPacked(d, g, u, dgu, bf(7, 8), 0, 2, 1))).toMatch(/^E_SHAPE.*'g_b' has 7 rows/);
    expect(errCode(() => A.opSwigluBackwardPacked(d, g, u, dgu, bf(8, 8), 5, 2, 1))).toMatch(/^E_SHAPE.*columns 5\.\.9 of 'g_b'/);
    expect(errCode(() => A.opSwigluBackwardPacked(d, g, u, dgu, bf(8, 8), 0, 3, 1))).toMatch(/^E_SHAPE.*'dgu' has 12 columns/);
    expect(errCode(() => A.opSwigluBackwardPacked(d, g, u, dgu, f32(new Float32Array(64), [8, 8]), 0, 2, 1))).toMatch(/^E_DTYPE.*'g_b'/);
    expect(errCode(() => A.opSwigluBackwardPacked(d, g, u, dgu, bf(8, 8), 0, 2, NaN))).toMatch(/^E_ARG.*'g_scale'/);
  });
});
