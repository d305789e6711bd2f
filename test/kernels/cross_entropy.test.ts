// kernels.maskedCrossEntropy and kernels.linearCrossEntropy against float64
// references, on every ISA this CPU runs, with poisoned outputs and scratch.
import { beforeAll, describe, expect, it } from 'vitest';

import { Tensor, kernels, runtime } from '../../src/index.js';
import {
  allFinite, crossEntropy64, linearCrossEntropy64, randn, relError, rng, seed,
} from '../../bench/kernels/reference.js';
import { isas, poisonAndRestoreIsa } from '../helpers/kernels.js';

poisonAndRestoreIsa();

/** Targets in [0, v) with every `ignoreEvery`-th row (and row 3, if present) ignored. */
function makeTargets(rand: () => number, n: number, v: number, ignoreEvery = 4, ignore = -100): Int32Array {
  const t = new Int32Array(n);
  for (let i = 0; i < n; i++) t[i] = i % ignoreEvery === 1 || i === 3 ? ignore : Math.floor(rand() * v);
  return t;
}

function relClose(got: number, ref: number): number {
  return Math.abs(got - ref) / Math.max(Math.abs(ref), 1e-30);
}

describe.each(isas)('masked_cross_entropy on %s', (isa) => {
  beforeAll(() => runtime.setIsa(isa));

  it.each([
    { n: 37, v: 77, scale: 3 },
    { n: 5, v: 1, scale: 1 },
    { n: 11, v: 1000, scale: 1e4 }, // logits of magnitude 1e4: stable log-sum-exp
  ])('matches float64 with some rows ignored (N=$n V=$v |logits|~$scale)', ({ n, v, scale }) => {
    const s = seed + n * 31 + v;
    const rand = rng(s);
    const logits = randn(rand, n * v, scale);
    const targets = makeTargets(rand, n, v);
    const r = kernels.maskedCrossEntropy({ logits: Tensor.from(logits, [n, v]), targets: Tensor.from(targets, [n]) });
    const ref = crossEntropy64(logits, targets, n, v);
    expect(r.count).toBe(ref.count);
    expect(Number.isFinite(r.loss)).toBe(true);
    expect(relClose(r.loss, ref.loss), `seed ${s}`).toBeLessThanOrEqual(1e-5);
    const d = r.dlogits!.toArray();
    expect(allFinite(d), `seed ${s}`).toBe(true);
    expect(relError(d, ref.dlogits), `seed ${s}`).toBeLessThanOrEqual(1e-5);
    // ignored rows get exactly zero gradient
    for (let i = 0; i < n; i++) {
      if (targets[i] !== -100) continue;
      for (let j = 0; j < v; j++) expect(d[i * v + j]).toBe(0);
    }
  });
});

describe('masked_cross_entropy semantics', () => {
  it('every row ignored: loss 0, count 0, zero gradient (not NaN)', () => {
    const n = 6, v = 9;
    const r = kernels.maskedCrossEntropy({
      logits: Tensor.from(randn(rng(seed), n * v), [n, v]),
      targets: Tensor.from(new Int32Array(n).fill(-100), [n]),
    });
    expect(r.loss).toBe(0);
    expect(r.count).toBe(0);
    expect(Array.from(r.dlogits!.toArray()).every((x) => x === 0)).toBe(true);
  });

  it('honours a custom ignoreIndex and a normalizer', () => {
    const n = 8, v = 13;
    const rand = rng(seed + 5);
    const logits = randn(rand, n * v, 2);
    const targets = makeTargets(rand, n, v, 3, -1);
    const r = kernels.maskedCrossEntropy({
      logits: Tensor.from(logits, [n, v]), targets: Tensor.from(targets, [n]), ignoreIndex: -1, normalizer: 40,
    });
    const ref = crossEntropy64(logits, targets, n, v, -1, 40);
    expect(r.count).toBe(ref.count);
    expect(relClose(r.loss, ref.loss)).toBeLessThanOrEqual(1e-5);
    expect(relError(r.dlogits!.toArray(), ref.dlogits)).toBeLessThanOrEqual(1e-5);
  });

  it('agrees with finite differences', () => {
    const n = 7, v = 19;
    const s = seed + 17;
    const rand = rng(s);
    const logits = randn(rand, n * v, 2);
    const targets = makeTargets(rand, n, v);
    const tt = Tensor.from(targets, [n]);
    const lossAt = (l: Float32Array) => kernels.maskedCrossEntropy({ logits: Tensor.from(l, [n, v]), targets: tt, needGrad: false }).loss;
    const g = kernels.maskedCrossEntropy({ logits: Tensor.from(logits, [n, v]), targets: tt }).dlogits!.toArray();
    let maxG = 0;
    for (const x of g) maxG = Math.max(maxG, Math.abs(x));
    const h = 1e-2;
    // the target logits (largest gradients) and random others
    const picks: number[] = [];
    for (let i = 0; i < n; i++) if (targets[i] !== -100) picks.push(i * v + targets[i]);
    for (let k = 0; k < 6; k++) picks.push(Math.floor(rand() * n * v));
    for (const idx of picks) {
      const p = logits.slice(), m = logits.slice();
      p[idx] += h;
      m[idx] -= h;
      const fd = (lossAt(p) - lossAt(m)) / (2 * h);
      expect(Math.abs(fd - g[idx]), `entry ${idx} seed ${s}`).toBeLessThanOrEqual(1e-3 * maxG);
    }
  });
});

describe.each(isas)('linear_cross_entropy on %s', (isa) => {
  beforeAll(() => runtime.setIsa(isa));

  it.each([
    { n: 37, c: 123, v: 77, chunkRows: 0 },
    { n: 37, c: 123, v: 77, chunkRows: 5 }, // several chunks, the last one ragged
    { n: 3, c: 1, v: 300, chunkRows: 1 },
  ])('f32 matches float64 (N=$n C=$c V=$v chunkRows=$chunkRows)', ({ n, c, v, chunkRows }) => {
    const s = seed + n + c * 3 + v;
    const rand = rng(s);
    const h = randn(rand, n * c);
    const w = randn(rand, v * c, 0.3);
    const targets = makeTargets(rand, n, v);
    const r = kernels.linearCrossEntropy({
      h: Tensor.from(h, [n, c]), w: Tensor.from(w, [v, c]), targets: Tensor.from(targets, [n]),
      needWeightGrad: true, chunkRows,
    });
    const ref = linearCrossEntropy64(h, w, targets, n, c, v);
    expect(r.count).toBe(ref.count);
    expect(relClose(r.loss, ref.loss), `seed ${s}`).toBeLessThanOrEqual(1e-5);
    expect(allFinite(r.dh!.toArray())).toBe(true);
    expect(relError(r.dh!.toArray(), ref.dh), `seed ${s}`).toBeLessThanOrEqual(1e-5);
    expect(relError(r.dw!.toArray(), ref.dw), `seed ${s}`).toBeLessThanOrEqual(1e-5);
    const dh = r.dh!.toArray();
    for (let i = 0; i < n; i++) {
      if (targets[i] !== -100) continue;
      for (let j = 0; j < c; j++) expect(dh[i * c + j]).toBe(0);
    }
  });

  it('bf16 head stays within 1e-2 of float64; dw only when asked', () => {
    const n = 37, c = 123, v = 77;
    const s = seed + 1234;
    const rand = rng(s);
    const h = randn(rand, n * c);
    const w = randn(rand, v * c, 0.3);
    const targets = makeTargets(rand, n, v);
    const wt = Tensor.from(w, [v, c], { dtype: 'bf16' });
    const r = kernels.linearCrossEntropy({ h: Tensor.from(h, [n, c]), w: wt, targets: Tensor.from(targets, [n]) });
    expect(r.dw).toBeNull();
    const ref = linearCrossEntropy64(h, w, targets, n, c, v);
    expect(relClose(r.loss, ref.loss), `seed ${s}`).toBeLessThanOrEqual(1e-2);
    expect(relError(r.dh!.toArray(), ref.dh), `seed ${s}`).toBeLessThanOrEqual(1e-2);
  });
});

describe('linear_cross_entropy semantics', () => {
  it('equals maskedCrossEntropy over materialised logits', () => {
    const n = 21, c = 40, v = 333;
    const rand = rng(seed + 3);
    const h = Tensor.from(randn(rand, n * c), [n, c]);
    const w = Tensor.from(randn(rand, v * c, 0.2), [v, c]);
    const targets = Tensor.from(makeTargets(rand, n, v), [n]);
    const logits = kernels.matmul({ a: h, b: w, transB: true });
    const unfused = kernels.maskedCrossEntropy({ logits, targets });
    const fused = kernels.linearCrossEntropy({ h, w, targets, chunkRows: 4 });
    expect(fused.count).toBe(unfused.count);
    expect(relClose(fused.loss, unfused.loss)).toBeLessThanOrEqual(1e-6);
    const dhUnfused = kernels.matmul({ a: unfused.dlogits!, b: w });
    expect(relError(fused.dh!.toArray(), dhUnfused.toArray())).toBeLessThanOrEqual(1e-5);
  });

  it('every row ignored: loss 0, count 0, zero gradients', () => {
    const n = 4, c = 6, v = 10;
    const r = kernels.linearCrossEntropy({
      h: Tensor.from(randn(rng(seed), n * c), [n, c]), w: Tensor.from(randn(rng(seed + 1), v * c), [v, c]),
      targets: Tensor.from(new Int32Array(n).fill(-100), [n]), needWeightGrad: true,
    });
    expect(r).toMatchObject({ loss: 0, count: 0 });
    expect(Array.from(r.dh!.toArray()).every((x) => x === 0)).toBe(true);
    expect(Array.from(r.dw!.toArray()).every((x) => x === 0)).toBe(true);
  });

  it('dh agrees with finite differences', () => {
    const n = 6, c = 11, v = 23;
    const s = seed + 77;
    const rand = rng(s);
    const h = randn(rand, n * c);
    const w = Tensor.from(randn(rand, v * c, 0.5), [v, c]);
    const targets = Tensor.from(makeTargets(rand, n, v, 3), [n]);
    const lossAt = (x: Float32Array) =>
      kernels.linearCrossEntropy({ h: Tensor.from(x, [n, c]), w, targets, needInputGrad: false }).loss;
    const dh = kernels.linearCrossEntropy({ h: Tensor.from(h, [n, c]), w, targets }).dh!.toArray();
    let maxG = 0;
    for (const x of dh) maxG = Math.max(maxG, Math.abs(x));
    const step = 1e-2;
    for (let k = 0; k < 10; k++) {
      const idx = Math.floor(rand() * n * c);
      const p = h.slice(), m = h.slice();
      p[idx] += step;
      m[idx] -= step;
      const fd = (lossAt(p) - lossAt(m)) / (2 * step);
      expect(Math.abs(fd - dh[idx]), `entry ${idx} seed ${s}`).toBeLessThanOrEqual(2e-3 * maxG);
    }
  });
});
