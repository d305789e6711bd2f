// adamw: three steps with weight decay against a float64 implementation of torch.optim.AdamW.
import { describe, expect, it } from 'vitest';
import { Tensor, handleOf } from '../../../src/tensor.js';
import { addon, errCode, f32, randn, relErr } from './helpers.js';

describe('adamw op vs float64', () => {
  it('three steps, weight decay 0.1', () => {
    const n = 37, lr = 1e-2, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
    const p0 = randn(n, 1);
    const A = addon();
    const p = handleOf(Tensor.from(p0, [n])), m = handleOf(Tensor.zeros([n])), v = handleOf(Tensor.zeros([n]));
    const P = Float64Array.from(p0), M = new Float64Array(n), Vv = new Float64Array(n);
    for (let t = 1; t <= 3; t++) {
      const g = randn(n, 10 + t);
      A.opAdamw(p, f32(g, [n]), m, v, lr, b1, b2, eps, wd, t);
      for (let i = 0; i < n; i++) {
        P[i] *= 1 - lr * wd;
        M[i] = b1 * M[i] + (1 - b1) * g[i];
        Vv[i] = b2 * Vv[i] + (1 - b2) * g[i] * g[i];
        P[i] -= (lr / (1 - b1 ** t)) * (M[i] / (Math.sqrt(Vv[i]) / Math.sqrt(1 - b2 ** t) + eps));
      }
    }
    expect(relErr(p.toArray(), P)).toBeLessThan(1e-6);
    expect(relErr(m.toArray(), M)).toBeLessThan(1e-6);
    expect(relErr(v.toArray(), Vv)).toBeLessThan(1e-6);
  });

  it('gradScale: the gradient is scaled and rounded to f32 first (clipping), as if scaled in place', () => {
    const n = 53, lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01, scale = 0.37;
    const A = addon();
    const p0 = randn(n, 3), g = randn(n, 4);
    const p = handleOf(Tensor.from(p0, [n])), m = handleOf(Tensor.zeros([n])), v = handleOf(Tensor.zeros([n]));
    A.opAdamw(p, f32(g, [n]), m, v, lr, b1, b2, eps, wd, 1, scale);
    const gs = Float32Array.from(g, (x) => x * scale); // rounded to f32, like an in-place scale of a Float32Array
    const p2 = handleOf(Tensor.from(p0, [n])), m2 = handleOf(Tensor.zeros([n])), v2 = handleOf(Tensor.zeros([n]));
    A.opAdamw(p2, handleOf(Tensor.from(gs, [n])), m2, v2, lr, b1, b2, eps, wd, 1);
    expect(p.toArray()).toEqual(p2.toArray());
    expect(m.toArray()).toEqual(m2.toArray());
    expect(v.toArray()).toEqual(v2.toArray());
    expect(p.toArray()).not.toEqual(Tensor.from(p0, [n]).toArray());
  });

  it('bad hyper-parameters are E_ARG', () => {
    const A = addon();
    const t = () => handleOf(Tensor.zeros([2]));
    expect(errCode(() => A.opAdamw(t(), t(), t(), t(), 1e-3, 1, 0.999, 1e-8, 0, 1))).toMatch(/^E_ARG.*beta1/);
    expect(errCode(() => A.opAdamw(t(), t(), t(), t(), 1e-3, 0.9, 0.999, 1e-8, 0, 0))).toMatch(/^E_ARG.*step/);
    expect(errCode(() => A.opAdamw(t(), handleOf(Tensor.zeros([3])), t(), t(), 1e-3, 0.9, 0.999, 1e-8, 0, 1))).toMatch(/^E_SHAPE/);
    expect(errCode(() => A.opAdamw(t(), t(), t(), t(), 1e-3, 0.9, 0.999, 1e-8, 0, 1, 0))).toMatch(/^E_ARG.*gradScale/);
    expect(errCode(() => A.opAdamw(t(), t(), t(), t(), 1e-3, 0.9, 0.999, 1e-8, 0, 1, NaN))).toMatch(/^E_ARG.*gradScale/);
  });
});

describe('sum_squares op (the global gradient norm) vs float64', () => {
  it('several tensors, one over several chunks, one empty', () => {
    const A = addon();
    const sizes = [1, 70001, 0, 131072 + 5, 37];
    const arrays = sizes.map((n, i) => randn(n, 100 + i));
    let want = 0;
    for (const a of arrays) for (const x of a) want += Math.fround(x) * Math.fround(x);
    const got = A.opSumSquares(arrays.map((a, i) => f32(a, [sizes[i]])));
    expect(Math.abs(got - want) / want).toBeLessThan(1e-12);
    expect(A.opSumSquares([f32(new Float64Array([3, 4]), [2])])).toBe(25);
  });

  it('does not depend on the thread count', async () => {
    const { runtime } = await import('../../../src/index.js');
    const A = addon();
    const ts = [f32(randn(300000, 7), [300000]), f32(randn(999, 8), [999])];
    const before = runtime.info().threads;
    try {
      runtime.setThreads(1);
      const one = A.opSumSquares(ts);
      runtime.setThreads(3);
      expect(A.opSumSquares(ts)).toBe(one);
    } finally {
      runtime.setThreads(before);
    }
  });

  it('bad input is E_ARG or E_DTYPE', () => {
    const A = addon();
    expect(errCode(() => A.opSumSquares([]))).toMatch(/^E_ARG/);
    expect(errCode(() => A.opSumSquares([handleOf(Tensor.from(new Int32Array([1]), [1], { dtype: 'i32' }))]))).toMatch(/^E_DTYPE/);
  });
});
