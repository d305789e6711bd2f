// rmsnorm_forward into a packed x with s·u besides (ops/rmsnorm.h's y_packed and u_a; INSTILL_CUDA_NEXT `norm_u` in the
// model), run through opRmsnormPacked on one device and held to what the op promises: y's columns the bits of the plain
// bf16 norm (opRmsnorm), rstd's too, s·u against float64 (s · Σ y·A over the bf16 values, rounded once to bf16), and
// every other column as it was (poisoned with NaN before the call). checkNormG: rmsnorm_backward into a packed dy with
// s·g besides (dx_packed and g_b; `norm_g`) likewise, against the same call without g_b; checkSwigluG: swiglu_backward
// into the gate/up group's packed dy with its s·g besides (dgu and g_b; `swiglu_g`) likewise; checkSwigluU:
// swiglu_forward into down_proj's packed x with its s·u besides (out_packed and u_a; `swiglu_u`). The CPU's tests
// (test/model/ops/rmsnorm.test.ts, swiglu.test.ts) and the GPU's (test/cuda/next/norm_u, norm_g, swiglu_g,
// swiglu_u.test.ts) share them.
import { expect } from 'vitest';

import { rng, randn } from '../../bench/kernels/reference.js';
import { native } from '../../src/native.js';
import { Tensor, handleOf } from '../../src/tensor.js';

export interface NormUCase {
  n: number;      // rows (N)
  c: number;      // C
  ld: number;     // the packed x's row length, >= c + rows
  aRows: number;  // rows of the matrix A lies in (the group's kept matrix)
  lda: number;    // its row length, >= c
  row0: number;   // A's first row in it
  rows: number;   // A's rows: u's columns (m·R)
  scale: number;  // s
}

// Data as an f32 (on) or bf16 (bf) tensor on `device`.
function placer(device: 'cpu' | 'cuda') {
  const on = (data: Float32Array, shape: number[], dtype: 'f32' | 'bf16' = 'f32') => {
    const t = Tensor.from(data, shape, { dtype });
    return device === 'cpu' ? t : t.to(device);
  };
  return { on, bf: (data: Float32Array, shape: number[]) => on(data, shape, 'bf16') };
}

const bitsOf = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

/** The values the fused kernel writes besides its narrow product against the plain kernel's: the same bits on the CPU
 * (one code path); on a GPU the same bits are what the kernels are written for (the same expressions and reduction
 * order), but ptxas may contract a multiply and an add into an FMA in one kernel and not the other, so there each
 * element may be one unit off in the last place (bf16's where `bf16`), and how many are is printed. */
function expectSameValues(what: string, device: 'cpu' | 'cuda', got: Float32Array, want: Float32Array, bf16: boolean): void {
  if (device === 'cpu') {
    expect(bitsOf(got), what).toEqual(bitsOf(want));
    return;
  }
  expect(got.length).toBe(want.length);
  const g = new Int32Array(got.buffer, got.byteOffset, got.length), w = new Int32Array(want.buffer, want.byteOffset, want.length);
  const unit = bf16 ? 0x10000 : 1;
  let differ = 0, worst = 0;
  for (let i = 0; i < g.length; i++) {
    if (g[i] === w[i]) continue;
    ++differ;
    worst = Math.max(worst, Number.isNaN(got[i]) || Math.sign(got[i]) !== Math.sign(want[i]) ? Infinity : Math.abs(g[i] - w[i]) / unit);
  }
  if (differ) console.log(`${what}: ${differ} of ${g.length} elements differ from the plain kernel's, by ${worst} ulp at most`);
  expect(worst, `${what}: ulps off the plain kernel's`).toBeLessThanOrEqual(1);
}

/** A narrow product's columns of a packed result against float64: got[i·ld + col + j] (rows i < n, columns j < cols)
 * within half a bf16 ulp of scale · Σ_{k < kLen} x(i, j, k)·b(j, k), plus f32 summation's error on the sum of the
 * terms' magnitudes; every column from col + cols to ld still NaN (poisoned before the call). Returns the worst error
 * in units of its bound (the tests print it). */
function expectNarrow(what: string, got: Float32Array, n: number, ld: number, col: number, cols: number, kLen: number,
  scale: number, x: (i: number, j: number, k: number) => number, b: (j: number, k: number) => number): number {
  let worst = 0, bad = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < cols; j++) {
      let acc = 0, mag = 0;
      for (let k = 0; k < kLen; k++) {
        const t = x(i, j, k) * b(j, k);
        acc += t;
        mag += Math.abs(t);
      }
      const ref = scale * acc, bound = 2 ** -8 * Math.abs(ref) + 2 ** -20 * Math.abs(scale) * mag + 1e-30;
      const v = got[i * ld + col + j];
      const e = Number.isFinite(v) ? Math.abs(v - ref) / bound : Infinity;
      if (e > 1 && bad++ < 5) console.log(`${what}: row ${i} column ${j}: ${v} against ${ref} (bound ${bound.toExponential(2)})`);
      worst = Math.max(worst, e);
    }
    for (let j = col + cols; j < ld; j++) expect(got[i * ld + j], `${what}: row ${i} column ${j} written`).toBeNaN();
  }
  expect(bad, `${what}: elements off float64`).toBe(0);
  return worst;
}

/** Runs one case on `device` and asserts the op's contract; returns the worst error of s·u in units of its bound. */
export function checkNormU(device: 'cpu' | 'cuda', cs: NormUCase, seed: number): number {
  const A = native();
  const r = rng(seed);
  const { n, c, ld, aRows, lda, row0, rows, scale } = cs;
  const eps = 1e-5;
  const x = randn(r, n * c, 1.5), w = randn(r, c, 1), a = randn(r, aRows * lda, 0.2);
  const { on, bf } = placer(device);
  const xt = on(x, [n, c]), wt = on(w, [c]);
  const at = bf(a, [aRows, lda]);
  const packed = bf(new Float32Array(n * ld).fill(NaN), [n, ld]);
  const rstd = A.opRmsnormPacked(handleOf(xt), handleOf(wt), eps, handleOf(packed), handleOf(at), row0, rows, scale);
  const plain = A.opRmsnorm(handleOf(xt), handleOf(wt), eps, 'bf16');
  const got = packed.to('cpu').toArray() as Float32Array;
  const y = A.tensorTo(plain.y, 'cpu').toArray() as Float32Array;
  const aBf = at.to('cpu').toArray() as Float32Array;
  // y and rstd: the plain norm's bits
  const yGot = new Float32Array(n * c);
  for (let i = 0; i < n; i++) yGot.set(got.subarray(i * ld, i * ld + c), i * c);
  expectSameValues(`norm_u ${device}: y`, device, yGot, y, true);
  expectSameValues(`norm_u ${device}: rstd`, device, A.tensorTo(rstd, 'cpu').toArray() as Float32Array,
    A.tensorTo(plain.rstd, 'cpu').toArray() as Float32Array, false);
  const worst = expectNarrow(`norm_u ${device}`, got, n, ld, c, rows, c, scale, (i, _j, k) => y[i * c + k],
    (j, k) => aBf[(row0 + j) * lda + k]);
  for (const t of [xt, wt, at, packed]) t.dispose();
  return worst;
}

export interface NormGCase {
  n: number;        // rows (N)
  c: number;        // C
  ld: number;       // the packed dy's row length, >= c + rows
  bRows: number;    // rows of the matrix B lies in (the linear's kept [W | B]), >= c
  ldb: number;      // its row length
  col0: number;     // B's first column in it
  rows: number;     // B's columns: g's (R)
  scale: number;    // s
  accumulate: boolean;
}

/** The backward's case on `device`: dx and its bf16 copy the bits of the same call without g_b, s·g against float64
 * over the copy's bf16 values and B, the columns past it untouched; the worst error of s·g in units of its bound. */
export function checkNormG(device: 'cpu' | 'cuda', cs: NormGCase, seed: number): number {
  const A = native();
  const r = rng(seed);
  const { n, c, ld, bRows, ldb, col0, rows, scale, accumulate } = cs;
  const x = randn(r, n * c, 1.5), w = randn(r, c, 1), dy = randn(r, n * c, 1), dx0 = randn(r, n * c, 1);
  const b = randn(r, bRows * ldb, 0.2);
  const { on, bf } = placer(device);
  const xt = on(x, [n, c]), wt = on(w, [c]), dyt = on(dy, [n, c]);
  const bt = bf(b, [bRows, ldb]);
  const rstd = A.opRmsnorm(handleOf(xt), handleOf(wt), 1e-5).rstd;
  const run = (withG: boolean) => {
    const dx = on(dx0, [n, c]);
    const packed = bf(new Float32Array(n * ld).fill(NaN), [n, ld]);
    if (withG) A.opRmsnormBackwardPacked(handleOf(dyt), handleOf(xt), handleOf(wt), rstd, handleOf(dx), accumulate, handleOf(packed), handleOf(bt), col0, rows, scale);
    else A.opRmsnormBackwardPacked(handleOf(dyt), handleOf(xt), handleOf(wt), rstd, handleOf(dx), accumulate, handleOf(packed));
    const out = { dx: dx.to('cpu').toArray() as Float32Array, packed: packed.to('cpu').toArray() as Float32Array };
    dx.dispose();
    packed.dispose();
    return out;
  };
  const got = run(true), plain = run(false);
  expectSameValues(`norm_g ${device}: dx`, device, got.dx, plain.dx, false);
  const bBf = bt.to('cpu').toArray() as Float32Array;
  for (let i = 0; i < n; i++) {
    expectSameValues(`norm_g ${device}: dx's bf16 copy, row ${i}`, device, got.packed.subarray(i * ld, i * ld + c), plain.packed.subarray(i * ld, i * ld + c), true);
  }
  const worst = expectNarrow(`norm_g ${device}`, got.packed, n, ld, c, rows, c, scale, (i, _j, k) => got.packed[i * ld + k],
    (j, k) => bBf[k * ldb + col0 + j]);
  for (const t of [xt, wt, dyt, bt]) t.dispose();
  return worst;
}

export interface SwigluGCase {
  n: number;      // rows (N)
  f: number;      // F
  ld: number;     // the packed dy's row length, >= 2f + 2·rank
  ldb: number;    // the kept matrix's row length (its rows: 2f)
  col0: number;   // gate's B block's first column (up's follows it)
  rank: number;   // R
  scale: number;  // s
}

/** SwiGLU's backward on `device` with the group's s·g: dgate and dup the bits of the same call without g_b, each s·g
 * column against float64 over its own block (gate's columns from dgate and rows 0..F, up's from dup and rows F..2F),
 * the columns past them untouched; the worst error of s·g in units of its bound. */
export function checkSwigluG(device: 'cpu' | 'cuda', cs: SwigluGCase, seed: number): number {
  const A = native();
  const r = rng(seed);
  const { n, f, ld, ldb, col0, rank, scale } = cs;
  const { bf } = placer(device);
  const dout = bf(randn(r, n * f, 1), [n, f]), gate = bf(randn(r, n * f, 2), [n, f]), up = bf(randn(r, n * f, 1), [n, f]);
  const bt = bf(randn(r, 2 * f * ldb, 0.2), [2 * f, ldb]);
  const run = (withG: boolean) => {
    const dgu = bf(new Float32Array(n * ld).fill(NaN), [n, ld]);
    if (withG) A.opSwigluBackwardPacked(handleOf(dout), handleOf(gate), handleOf(up), handleOf(dgu), handleOf(bt), col0, rank, scale);
    else A.opSwigluBackwardPacked(handleOf(dout), handleOf(gate), handleOf(up), handleOf(dgu));
    const out = dgu.to('cpu').toArray() as Float32Array;
    dgu.dispose();
    return out;
  };
  const got = run(true), plain = run(false);
  const bBf = bt.to('cpu').toArray() as Float32Array;
  for (let i = 0; i < n; i++) expectSameValues(`swiglu_g ${device}: dgate, dup, row ${i}`, device, got.subarray(i * ld, i * ld + 2 * f), plain.subarray(i * ld, i * ld + 2 * f), true);
  // column j of s·g is block h = j / R's: dgate's (h 0) or dup's (h 1) over its rows h·F.. of B
  const blk = (j: number) => (j < rank ? 0 : 1);
  const worst = expectNarrow(`swiglu_g ${device}`, got, n, ld, 2 * f, 2 * rank, f, scale,
    (i, j, k) => got[i * ld + blk(j) * f + k], (j, k) => bBf[(blk(j) * f + k) * ldb + col0 + j]);
  for (const t of [dout, gate, up, bt]) t.dispose();
  return worst;
}

export interface SwigluUCase {
  n: number;      // rows (N)
  f: number;      // F
  ld: number;     // the packed x's row length, >= f + rows
  aRows: number;  // rows of the (·, F) matrix A lies in
  row0: number;   // A's first row in it
  rows: number;   // A's rows: u's columns (R)
  scale: number;  // s
}

/** SwiGLU's forward on `device` with down_proj's s·u: h the bits of the same call without u_a, s·u against float64 over
 * h's bf16 values and A, the columns past it untouched; the worst error of s·u in units of its bound. */
export function checkSwigluU(device: 'cpu' | 'cuda', cs: SwigluUCase, seed: number): number {
  const A = native();
  const r = rng(seed);
  const { n, f, ld, aRows, row0, rows, scale } = cs;
  const { bf } = placer(device);
  const gate = bf(randn(r, n * f, 2), [n, f]), up = bf(randn(r, n * f, 1), [n, f]), at = bf(randn(r, aRows * f, 0.2), [aRows, f]);
  const run = (withU: boolean) => {
    const packed = bf(new Float32Array(n * ld).fill(NaN), [n, ld]);
    if (withU) A.opSwigluPacked(handleOf(gate), handleOf(up), handleOf(packed), handleOf(at), row0, rows, scale);
    else A.opSwigluPacked(handleOf(gate), handleOf(up), handleOf(packed));
    const out = packed.to('cpu').toArray() as Float32Array;
    packed.dispose();
    return out;
  };
  const got = run(true), plain = run(false);
  const aBf = at.to('cpu').toArray() as Float32Array;
  for (let i = 0; i < n; i++) expectSameValues(`swiglu_u ${device}: h, row ${i}`, device, got.subarray(i * ld, i * ld + f), plain.subarray(i * ld, i * ld + f), true);
  const worst = expectNarrow(`swiglu_u ${device}`, got, n, ld, f, rows, f, scale, (i, _j, k) => got[i * ld + k],
    (j, k) => aBf[(row0 + j) * f + k]);
  for (const t of [gate, up, at]) t.dispose();
  return worst;
}
