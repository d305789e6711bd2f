// kernels.loraLinear / loraLinearBackward against a float64 reference, on every
// ISA this CPU runs, with fresh random inputs of awkward sizes and poisoned
// (NaN-filled) outputs and scratch.
import { beforeAll, describe, expect, it } from 'vitest';

import { Tensor, kernels, runtime } from '../../src/index.js';
import {
  allFinite, loraLinear64, loraLinearBackward64, randn, relError, rng, roundBf16, seed,
} from '../../bench/kernels/reference.js';
import { isas, poisonAndRestoreIsa } from '../helpers/kernels.js';

poisonAndRestoreIsa();

interface Case { n: number; inF: number; outF: number; r: number; bias: boolean }

const cases: Case[] = [
  { n: 37, inF: 123, outF: 77, r: 5, bias: false },
  { n: 37, inF: 123, outF: 77, r: 5, bias: true },
  { n: 1, inF: 1, outF: 1, r: 1, bias: true },
  // in + r crosses the 256-wide K block, so the last block mixes x·Wᵀ and s·u·Bᵀ
  { n: 9, inF: 250, outF: 41, r: 16, bias: false },
  // in + r = 657: two K blocks on every ISA, the second mixing x·Wᵀ and s·u·Bᵀ, bias on the last
  { n: 5, inF: 650, outF: 33, r: 7, bias: true },
  // several row blocks and a ragged column panel
  { n: 130, inF: 67, outF: 2100, r: 3, bias: true },
];

function makeInputs(c: Case, s: number) {
  const rand = rng(s);
  return {
    x: randn(rand, c.n * c.inF),
    w: randn(rand, c.outF * c.inF, 0.5),
    bias: c.bias ? randn(rand, c.outF) : null,
    a: randn(rand, c.r * c.inF, 0.5),
    b: randn(rand, c.outF * c.r, 0.5),
    dy: randn(rand, c.n * c.outF),
    scale: 0.25 + rand() * 2,
  };
}

describe.each(isas)('lora_linear on %s', (isa) => {
  beforeAll(() => runtime.setIsa(isa));

  it.each(cases)('f32 forward and backward match float64 (N=$n in=$inF out=$outF r=$r bias=$bias)', (c) => {
    const s = seed + c.n + c.inF;
    const d = makeInputs(c, s);
    const x = Tensor.from(d.x, [c.n, c.inF]);
    const w = Tensor.from(d.w, [c.outF, c.inF]);
    const a = Tensor.from(d.a, [c.r, c.inF]);
    const b = Tensor.from(d.b, [c.outF, c.r]);
    const bias = d.bias ? Tensor.from(d.bias, [c.outF]) : undefined;
    const { y, u } = kernels.loraLinear({ x, w, a, b, bias, scale: d.scale });
    expect(y.shape).toEqual([c.n, c.outF]);
    expect(u.shape).toEqual([c.n, c.r]);
    const ref = loraLinear64(d.x, d.w, d.bias, d.a, d.b, d.scale, c.n, c.inF, c.outF, c.r);
    const msg = `seed ${s}`;
    expect(allFinite(y.toArray()), msg).toBe(true);
    expect(relError(y.toArray(), ref.y), msg).toBeLessThanOrEqual(1e-5);
    expect(relError(u.toArray(), ref.u), msg).toBeLessThanOrEqual(1e-5);

    const dy = Tensor.from(d.dy, [c.n, c.outF]);
    const g = kernels.loraLinearBackward({ dy, x, w, a, b, u, scale: d.scale });
    const gref = loraLinearBackward64(d.dy, d.x, d.w, d.a, d.b, d.scale, c.n, c.inF, c.outF, c.r);
    expect(g.dx).not.toBeNull();
    expect(relError(g.dx!.toArray(), gref.dx), msg).toBeLessThanOrEqual(1e-5);
    expect(relError(g.da.toArray(), gref.da), msg).toBeLessThanOrEqual(1e-5);
    expect(relError(g.db.toArray(), gref.db), msg).toBeLessThanOrEqual(1e-5);
  });

  it.each(['bf16', 'f16'] as const)('%s weights stay within 1e-2 of the float64 result', (dtype) => {
    const c = cases[0];
    const s = seed + 7;
    const d = makeInputs(c, s);
    const x = Tensor.from(d.x, [c.n, c.inF]);
    const w = Tensor.from(d.w, [c.outF, c.inF], { dtype });
    expect(w.dtype).toBe(dtype);
    const a = Tensor.from(d.a, [c.r, c.inF]);
    const b = Tensor.from(d.b, [c.outF, c.r]);
    const { y, u } = kernels.loraLinear({ x, w, a, b, scale: d.scale });
    const ref = loraLinear64(d.x, d.w, null, d.a, d.b, d.scale, c.n, c.inF, c.outF, c.r);
    expect(relError(y.toArray(), ref.y), `seed ${s}`).toBeLessThanOrEqual(1e-2);
    // and exactly the f32 math on the rounded weights, so the only error is the rounding of w
    // (with AVX512-BF16 the activations are rounded to bf16 too, as under autocast: see matmul.test.ts)
    if (dtype === 'bf16' && isa !== 'avx512bf16') {
      const ref16 = loraLinear64(d.x, roundBf16(d.w), null, d.a, d.b, d.scale, c.n, c.inF, c.outF, c.r);
      expect(relError(y.toArray(), ref16.y), `seed ${s}`).toBeLessThanOrEqual(1e-5);
    }
    const dy = Tensor.from(d.dy, [c.n, c.outF]);
    const g = kernels.loraLinearBackward({ dy, x, w, a, b, u, scale: d.scale });
    const gref = loraLinearBackward64(d.dy, d.x, d.w, d.a, d.b, d.scale, c.n, c.inF, c.outF, c.r);
    expect(relError(g.dx!.toArray(), gref.dx), `seed ${s}`).toBeLessThanOrEqual(1e-2);
    expect(relError(g.da.toArray(), gref.da), `seed ${s}`).toBeLessThanOrEqual(1e-2);
    expect(relError(g.db.toArray(), gref.db), `seed ${s}`).toBeLessThanOrEqual(1e-2);
  });
});

describe.each(isas)('lora_linear with bf16 activations on %s', (isa) => {
  beforeAll(() => runtime.setIsa(isa));
  const bf = (v: Float32Array, shape: number[]) => Tensor.from(v, shape, { dtype: 'bf16' });
  const nanBf16 = (shape: number[]) => bf(new Float32Array(shape[0] * shape[1]).fill(NaN), shape);
  // The elements whose bits differ (a count and the first, not a diff of thousands of numbers).
  const differing = (gotT: Tensor | Float32Array, want: Float32Array) => {
    const got = gotT instanceof Tensor ? (gotT.toArray() as Float32Array) : gotT;
    const g = new Uint32Array(got.buffer, got.byteOffset, got.length), w = new Uint32Array(want.buffer, want.byteOffset, want.length);
    let count = 0, first = -1;
    for (let i = 0; i < g.length; i++) if (g[i] !== w[i]) { count++; if (first < 0) first = i; }
    return count === 0 ? 'none' : `${count} of ${g.length}, first at ${first}: ${got[first]} vs ${want[first]}`;
  };

  // x, y, dy, dx each bf16 beside a bf16 weight. A bf16 output is the f32 result rounded once: the same
  // call with an f32 output, rounded, gives its bits. A bf16 input is read as it is: the results match
  // the call on the same values in f32 up to f32 summation order, and float64 within bf16 tolerance.
  // (With AVX512-BF16 a product with a bf16 operand rounds its f32 operands to bf16 too, as on a GPU:
  // u = x·Aᵀ then rounds A, which the all-f32 call does not, so there the two agree to bf16 tolerance.)
  const sameMath = isa === 'avx512bf16' ? 1e-2 : 1e-5;
  it.each([cases[0], cases[3], cases[5]])('x, y, dy, dx in bf16 (N=$n in=$inF out=$outF r=$r bias=$bias)', (c) => {
    const s = seed + 31 + c.n;
    const d = makeInputs(c, s);
    const msg = `seed ${s}`;
    const w = Tensor.from(d.w, [c.outF, c.inF], { dtype: 'bf16' });
    const a = Tensor.from(d.a, [c.r, c.inF]), b = Tensor.from(d.b, [c.outF, c.r]);
    const bias = d.bias ? Tensor.from(d.bias, [c.outF]) : undefined;
    const x16 = bf(d.x, [c.n, c.inF]);
    const x32 = Tensor.from(x16.toArray(), [c.n, c.inF]);  // the same values in f32
    const y16 = nanBf16([c.n, c.outF]);
    const f16 = kernels.loraLinear({ x: x16, w, a, b, bias, scale: d.scale, out: { y: y16, u: Tensor.from(new Float32Array(c.n * c.r), [c.n, c.r]) } });
    expect(f16.y.dtype).toBe('bf16');
    const fA = kernels.loraLinear({ x: x16, w, a, b, bias, scale: d.scale });  // bf16 x, f32 y
    const fB = kernels.loraLinear({ x: x32, w, a, b, bias, scale: d.scale });  // f32 x, f32 y
    expect(differing(y16, roundBf16(fA.y.toArray() as Float32Array)), msg).toBe('none');
    expect(differing(f16.u, fA.u.toArray() as Float32Array), msg).toBe('none');
    expect(relError(fA.y.toArray(), fB.y.toArray()), msg).toBeLessThanOrEqual(sameMath);
    const ref = loraLinear64(x16.toArray(), roundBf16(d.w), d.bias, d.a, d.b, d.scale, c.n, c.inF, c.outF, c.r);
    expect(relError(y16.toArray(), ref.y), msg).toBeLessThanOrEqual(1e-2);

    const dy16 = bf(d.dy, [c.n, c.outF]);
    const dy32 = Tensor.from(dy16.toArray(), [c.n, c.outF]);
    const dx16 = nanBf16([c.n, c.inF]);
    const g16 = kernels.loraLinearBackward({ dy: dy16, x: x16, w, a, b, u: fA.u, scale: d.scale, out: { dx: dx16 } });
    const gA = kernels.loraLinearBackward({ dy: dy16, x: x16, w, a, b, u: fA.u, scale: d.scale });
    const gB = kernels.loraLinearBackward({ dy: dy32, x: x32, w, a, b, u: fA.u, scale: d.scale });
    expect(differing(dx16, roundBf16(gA.dx!.toArray() as Float32Array)), msg).toBe('none');
    expect(differing(g16.da, gA.da.toArray() as Float32Array), msg).toBe('none');  // dA, dB stay f32
    expect(differing(g16.db, gA.db.toArray() as Float32Array), msg).toBe('none');
    for (const k of ['dx', 'da', 'db'] as const) expect(relError(gA[k]!.toArray(), gB[k]!.toArray()), `${k} ${msg}`).toBeLessThanOrEqual(sameMath);
    const gref = loraLinearBackward64(dy16.toArray(), x16.toArray(), roundBf16(d.w), d.a, d.b, d.scale, c.n, c.inF, c.outF, c.r);
    expect(relError(dx16.toArray(), gref.dx), msg).toBeLessThanOrEqual(1e-2);
    expect(relError(g16.da.toArray(), gref.da), msg).toBeLessThanOrEqual(1e-2);

    // dx += into a bf16 dx: its values widened, the sum rounded once
    const dx0 = bf(randn(rng(s + 2), c.n * c.inF), [c.n, c.inF]);
    const acc32 = Tensor.from(dx0.toArray(), [c.n, c.inF]);
    kernels.loraLinearBackward({ dy: dy16, x: x16, w, a, b, u: fA.u, scale: d.scale, out: { dx: dx0 }, accumulateInputGrad: true });
    kernels.loraLinearBackward({ dy: dy16, x: x16, w, a, b, u: fA.u, scale: d.scale, out: { dx: acc32 }, accumulateInputGrad: true });
    expect(differing(dx0, roundBf16(acc32.toArray() as Float32Array)), msg).toBe('none');
  });

  it('refuses bf16 activations beside an f32 weight', () => {
    const w = Tensor.from(new Float32Array(20).fill(1), [5, 4]);
    const a = Tensor.from(new Float32Array(8).fill(1), [2, 4]), b = Tensor.from(new Float32Array(10).fill(1), [5, 2]);
    const x16 = bf(new Float32Array(12).fill(1), [3, 4]);
    expect(() => kernels.loraLinear({ x: x16, w, a, b, scale: 1 })).toThrow(/'x' must be f32 with an f32 weight/);
    const x = Tensor.from(new Float32Array(12).fill(1), [3, 4]);
    expect(() => kernels.loraLinear({ x, w, a, b, scale: 1, out: { y: nanBf16([3, 5]), u: Tensor.from(new Float32Array(6), [3, 2]) } }))
      .toThrow(/'y' must be f32 with an f32 weight/);
  });
});

describe('lora_linear gradients agree with finite differences', () => {
  // L = Σ y ⊙ R. y is linear in each of x, a and b on its own, so a central
  // difference is exact up to float32 rounding of y, and must match the
  // analytic gradient from loraLinearBackward with dy = R.
  const c: Case = { n: 13, inF: 29, outF: 17, r: 4, bias: true };
  const s = seed + 99;
  const d = makeInputs(c, s);
  const rand = rng(s + 1);
  const w = Tensor.from(d.w, [c.outF, c.inF]);
  const bias = Tensor.from(d.bias!, [c.outF]);
  const dyT = Tensor.from(d.dy, [c.n, c.outF]);

  function loss(x: Float32Array, a: Float32Array, b: Float32Array): number {
    const { y } = kernels.loraLinear({
      x: Tensor.from(x, [c.n, c.inF]), w, bias, a: Tensor.from(a, [c.r, c.inF]), b: Tensor.from(b, [c.outF, c.r]),
      scale: d.scale,
    });
    const yv = y.toArray();
    let sum = 0;
    for (let i = 0; i < yv.length; i++) sum += yv[i] * d.dy[i];
    return sum;
  }

  it('for x, a and b', () => {
    const { u } = kernels.loraLinear({
      x: Tensor.from(d.x, [c.n, c.inF]), w, bias, a: Tensor.from(d.a, [c.r, c.inF]), b: Tensor.from(d.b, [c.outF, c.r]),
      scale: d.scale,
    });
    const g = kernels.loraLinearBackward({
      dy: dyT, x: Tensor.from(d.x, [c.n, c.inF]), w, a: Tensor.from(d.a, [c.r, c.inF]),
      b: Tensor.from(d.b, [c.outF, c.r]), u, scale: d.scale,
    });
    const grads = { x: g.dx!.toArray(), a: g.da.toArray(), b: g.db.toArray() };
    const h = 0.125;
    for (const name of ['x', 'a', 'b'] as const) {
      const analytic = grads[name];
      let maxG = 0;
      for (const v of analytic) maxG = Math.max(maxG, Math.abs(v));
      for (let trial = 0; trial < 6; trial++) {
        const idx = Math.floor(rand() * analytic.length);
        const plus = { x: d.x.slice(), a: d.a.slice(), b: d.b.slice() };
        const minus = { x: d.x.slice(), a: d.a.slice(), b: d.b.slice() };
        plus[name][idx] += h;
        minus[name][idx] -= h;
        const fd = (loss(plus.x, plus.a, plus.b) - loss(minus.x, minus.a, minus.b)) / (2 * h);
        expect(Math.abs(fd - analytic[idx]), `${name}[${idx}] seed ${s}`).toBeLessThanOrEqual(1e-3 * maxG);
      }
    }
  });

  it('without dx when not asked', () => {
    const x = Tensor.from(d.x, [c.n, c.inF]);
    const a = Tensor.from(d.a, [c.r, c.inF]);
    const b = Tensor.from(d.b, [c.outF, c.r]);
    const { u } = kernels.loraLinear({ x, w, a, b, scale: d.scale });
    const g = kernels.loraLinearBackward({ dy: dyT, x, w, a, b, u, scale: d.scale, needInputGrad: false });
    expect(g.dx).toBeNull();
    const gref = loraLinearBackward64(d.dy, d.x, d.w, d.a, d.b, d.scale, c.n, c.inF, c.outF, c.r);
    expect(relError(g.da.toArray(), gref.da)).toBeLessThanOrEqual(1e-5);
  });
});

describe('lora_linear into given outputs', () => {
  it('writes y, u, dx, da, db into the given tensors; accumulate adds into da and db', () => {
    const c: Case = { n: 29, inF: 70, outF: 45, r: 6, bias: true };
    const s = seed + 101;
    const d = makeInputs(c, s);
    const x = Tensor.from(d.x, [c.n, c.inF]), w = Tensor.from(d.w, [c.outF, c.inF]);
    const a = Tensor.from(d.a, [c.r, c.inF]), b = Tensor.from(d.b, [c.outF, c.r]);
    const bias = Tensor.from(d.bias!, [c.outF]), dy = Tensor.from(d.dy, [c.n, c.outF]);
    const nan = (shape: number[]) => Tensor.from(new Float32Array(shape[0] * shape[1]).fill(NaN), shape);
    const y = nan([c.n, c.outF]), u = nan([c.n, c.r]);
    const f = kernels.loraLinear({ x, w, a, b, bias, scale: d.scale, out: { y, u } });
    expect(f.y).toBe(y);
    expect(f.u).toBe(u);
    const ref = loraLinear64(d.x, d.w, d.bias, d.a, d.b, d.scale, c.n, c.inF, c.outF, c.r);
    expect(relError(y.toArray(), ref.y), `seed ${s}`).toBeLessThanOrEqual(1e-5);
    expect(relError(u.toArray(), ref.u), `seed ${s}`).toBeLessThanOrEqual(1e-5);

    const gref = loraLinearBackward64(d.dy, d.x, d.w, d.a, d.b, d.scale, c.n, c.inF, c.outF, c.r);
    const dx = nan([c.n, c.inF]);
    const da = Tensor.from(new Float32Array(c.r * c.inF).fill(0.5), [c.r, c.inF]);
    const db = Tensor.from(new Float32Array(c.outF * c.r).fill(-1), [c.outF, c.r]);
    const g = kernels.loraLinearBackward({ dy, x, w, a, b, u, scale: d.scale, out: { dx, da, db }, accumulate: true });
    expect(g.dx).toBe(dx);
    expect(g.da).toBe(da);
    expect(g.db).toBe(db);
    expect(relError(dx.toArray(), gref.dx), `seed ${s}`).toBeLessThanOrEqual(1e-5);
    expect(relError(da.toArray(), gref.da.map((v) => v + 0.5)), `seed ${s}`).toBeLessThanOrEqual(1e-5);
    expect(relError(db.toArray(), gref.db.map((v) => v - 1)), `seed ${s}`).toBeLessThanOrEqual(1e-5);
    // without accumulate the given da/db are overwritten
    kernels.loraLinearBackward({ dy, x, w, a, b, u, scale: d.scale, out: { da, db } });
    expect(relError(da.toArray(), gref.da), `seed ${s}`).toBeLessThanOrEqual(1e-5);
    // accumulateInputGrad adds into out.dx (da/db overwritten, accumulate being off)
    const dx0 = randn(rng(s + 1), c.n * c.inF);
    const dxAcc = Tensor.from(Float32Array.from(dx0), [c.n, c.inF]);
    kernels.loraLinearBackward({ dy, x, w, a, b, u, scale: d.scale, out: { dx: dxAcc, da, db }, accumulateInputGrad: true });
    expect(relError(dxAcc.toArray(), gref.dx.map((v, i) => v + dx0[i])), `seed ${s}`).toBeLessThanOrEqual(1e-5);
    expect(relError(da.toArray(), gref.da), `seed ${s}`).toBeLessThanOrEqual(1e-5);
  });

  it.each(isas)('adds a residual into y: the bits of y + residual, on %s', (isa) => {
    runtime.setIsa(isa);
    for (const c of [cases[1], cases[4], cases[5]]) {
      const s = seed + 7 + c.n;
      const d = makeInputs(c, s);
      const x = Tensor.from(d.x, [c.n, c.inF]), w = Tensor.from(d.w, [c.outF, c.inF]);
      const a = Tensor.from(d.a, [c.r, c.inF]), b = Tensor.from(d.b, [c.outF, c.r]);
      const bias = d.bias ? Tensor.from(d.bias, [c.outF]) : undefined;
      const res = randn(rng(s + 1), c.n * c.outF, 3);
      const residual = Tensor.from(res, [c.n, c.outF]);
      const plain = kernels.loraLinear({ x, w, a, b, bias, scale: d.scale }).y.toArray() as Float32Array;
      const y = Tensor.from(new Float32Array(c.n * c.outF).fill(NaN), [c.n, c.outF]);
      const got = kernels.loraLinear({ x, w, a, b, bias, scale: d.scale, residual, out: { y } });
      expect(got.y).toBe(y);
      const want = Float32Array.from(plain, (v, i) => v + res[i]);  // the f32 sum the model's add made
      expect(Buffer.from((y.toArray() as Float32Array).buffer).equals(Buffer.from(want.buffer)), `seed ${s}`).toBe(true);
      expect(Array.from(residual.toArray())).toEqual(Array.from(Float32Array.from(res)));  // read, not written
      // and the same through a bf16 weight (the model's GPU case, here on the CPU)
      const w16 = Tensor.from(d.w, [c.outF, c.inF], { dtype: 'bf16' });
      const plain16 = kernels.loraLinear({ x, w: w16, a, b, bias, scale: d.scale }).y.toArray() as Float32Array;
      const got16 = kernels.loraLinear({ x, w: w16, a, b, bias, scale: d.scale, residual }).y.toArray() as Float32Array;
      expect(Array.from(got16)).toEqual(Array.from(plain16, (v, i) => Math.fround(v + res[i])));
    }
  });

  it('refuses a residual of the wrong shape or dtype, one that is y itself, and one beside a bf16 y', () => {
    const x = Tensor.from(new Float32Array(12).fill(1), [3, 4]), w = Tensor.from(new Float32Array(20).fill(1), [5, 4]);
    const a = Tensor.from(new Float32Array(8).fill(1), [2, 4]), b = Tensor.from(new Float32Array(10).fill(1), [5, 2]);
    const code = (fn: () => unknown) => { try { fn(); return 'none'; } catch (e) { return (e as { code?: string; message?: string }).code; } };
    expect(code(() => kernels.loraLinear({ x, w, a, b, scale: 1, residual: Tensor.zeros([3, 4]) }))).toBe('E_SHAPE');
    expect(code(() => kernels.loraLinear({ x, w, a, b, scale: 1, residual: Tensor.zeros([3, 5], { dtype: 'bf16' }) }))).toBe('E_DTYPE');
    const y = Tensor.zeros([3, 5]);
    expect(code(() => kernels.loraLinear({ x, w, a, b, scale: 1, residual: y, out: { y } }))).toBe('E_ARG');
    const w16 = Tensor.from(new Float32Array(20).fill(1), [5, 4], { dtype: 'bf16' });
    expect(code(() => kernels.loraLinear({ x, w: w16, a, b, scale: 1, residual: Tensor.zeros([3, 5]), out: { y: Tensor.zeros([3, 5], { dtype: 'bf16' }) } }))).toBe('E_DTYPE');
    expect(code(() => kernels.loraLinear({ x, w, a, b, scale: 1, residual: 'r' as never }))).toBe('E_ARG');
  });

  it('refuses outputs of the wrong shape, outputs that alias inputs, and accumulate without both gradients', () => {
    const x = Tensor.from(new Float32Array(12).fill(1), [3, 4]), w = Tensor.from(new Float32Array(20).fill(1), [5, 4]);
    const a = Tensor.from(new Float32Array(8).fill(1), [2, 4]), b = Tensor.from(new Float32Array(10).fill(1), [5, 2]);
    const code = (fn: () => unknown) => { try { fn(); return 'none'; } catch (e) { return (e as { code?: string }).code; } };
    expect(code(() => kernels.loraLinear({ x, w, a, b, scale: 1, out: { y: Tensor.zeros([3, 4]) } }))).toBe('E_SHAPE');
    expect(code(() => kernels.loraLinear({ x, w, a, b, scale: 1, out: { y: Tensor.zeros([3, 5], { dtype: 'bf16' }) } }))).toBe('E_DTYPE');
    const { u } = kernels.loraLinear({ x, w, a, b, scale: 1 });
    const dy = Tensor.from(new Float32Array(15).fill(1), [3, 5]);
    expect(code(() => kernels.loraLinearBackward({ dy, x, w, a, b, u, scale: 1, out: { dx: x } }))).toBe('E_ARG');
    expect(code(() => kernels.loraLinearBackward({ dy, x, w, a, b, u, scale: 1, accumulateInputGrad: true }))).toBe('E_ARG');
    expect(code(() => kernels.loraLinearBackward({ dy, x, w, a, b, u, scale: 1, out: { da: Tensor.zeros([2, 4]) }, accumulate: true }))).toBe('E_ARG');
    expect(code(() => kernels.loraLinear({ x, w, a, b, scale: 1, out: 'y' as never }))).toBe('E_ARG');
  });
});
