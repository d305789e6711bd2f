// swiglu: forward and backward against float64, with large |gate| (exp overflow must give 0, not NaN).
import { beforeAll, describe, expect, it } from 'vitest';
import { runtime } from '../../../src/index.js';
import { isas, poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { Tensor, handleOf } from '../../../src/tensor.js';
import { roundBf16 } from '../../../bench/kernels/reference.js';
import { addon, arr, bits, errCode, f32, randn, relErr } from './helpers.js';

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
    const hbits = (h: ReturnType<typeof bf>) => bits(arr(h));
    const A = addon();
    const out = A.opSwiglu(g, u);
    expect(out.dtype).toBe('bf16');
    expect(hbits(out)).toEqual(round(arr(A.opSwiglu(wide(g), wide(u)))));
    const bw = A.opSwigluBackward(d, g, u), bw32 = A.opSwigluBackward(wide(d), wide(g), wide(u));
    expect(hbits(bw.dgate)).toEqual(round(arr(bw32.dgate)));
    expect(hbits(bw.dup)).toEqual(round(arr(bw32.dup)));
    expect(errCode(() => A.opSwiglu(g, wide(u)))).toMatch(/E_DTYPE: 'up' must be bf16 like gate/);
  });

  // ops/swiglu.h's out_packed and dgu (swiglu_pack: down_proj's packed x, the gate/up group's packed dy): the bf16 op's
  // bits in the packed buffer's columns (h in 0..F; dgate in 0..F, dup in F..2F), the columns past them as they were
  it('7 x 61 into packed buffers: the bf16 op\'s bits in their columns, the rest untouched', () => {
    const N = 7, F = 61, ldh = 72, ldg = 2 * F + 14;
    const bf = (v: Float32Array, shape = [N, F]) => handleOf(Tensor.from(v, shape, { dtype: 'bf16' }));
    const g = bf(randn(N * F, 14, 3)), u = bf(randn(N * F, 15)), d = bf(randn(N * F, 16));
    const A = addon();
    const rows = (v: Float32Array, ld: number, c0: number, w: number) =>
      Array.from({ length: N }, (_, r) => bits(v.subarray(r * ld + c0, r * ld + c0 + w)));
    const fillH = Float32Array.from({ length: N * ldh }, (_, i) => 1 + (i % 5)), hp = bf(fillH, [N, ldh]);
    A.opSwigluPacked(g, u, hp);
    const h = arr(A.opSwiglu(g, u));
    expect(rows(arr(hp), ldh, 0, F)).toEqual(rows(h, F, 0, F));
    expect(rows(arr(hp), ldh, F, ldh - F)).toEqual(rows(fillH, ldh, F, ldh - F));
    const fillG = Float32Array.from({ length: N * ldg }, (_, i) => 2 + (i % 3)), dgu = bf(fillG, [N, ldg]);
    A.opSwigluBackwardPacked(d, g, u, dgu);
    const bw = A.opSwigluBackward(d, g, u);
    expect(rows(arr(dgu), ldg, 0, F)).toEqual(rows(arr(bw.dgate), F, 0, F));
    expect(rows(arr(dgu), ldg, F, F)).toEqual(rows(arr(bw.dup), F, 0, F));
    expect(rows(arr(dgu), ldg, 2 * F, ldg - 2 * F)).toEqual(rows(fillG, ldg, 2 * F, ldg - 2 * F));
  });
});
