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

  it('bad hyper-parameters are E_ARG', () => {
    const A = addon();
    const t = () => handleOf(Tensor.zeros([2]));
    expect(errCode(() => A.opAdamw(t(), t(), t(), t(), 1e-3, 1, 0.999, 1e-8, 0, 1))).toMatch(/^E_ARG.*beta1/);
    expect(errCode(() => A.opAdamw(t(), t(), t(), t(), 1e-3, 0.9, 0.999, 1e-8, 0, 0))).toMatch(/^E_ARG.*step/);
    expect(errCode(() => A.opAdamw(t(), handleOf(Tensor.zeros([3])), t(), t(), 1e-3, 0.9, 0.999, 1e-8, 0, 1))).toMatch(/^E_SHAPE/);
  });
});
