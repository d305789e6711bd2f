// attention: causal GQA over packed segments against a float64 reference (forward and an
// analytic float64 backward, itself spot-checked by finite differences), on awkward sizes:
// an empty segment, segments longer than the query block (32) and key tile (64), D = 10.
import { beforeAll, describe, expect, it } from 'vitest';
import { runtime } from '../../../src/index.js';
import { isas, poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { Tensor, handleOf } from '../../../src/tensor.js';
import type { TensorHandle } from '../../../src/native.js';
import { roundBf16 } from '../../../bench/kernels/reference.js';
import { addon, arr, errCode, f32, i32, randn, relErr } from './helpers.js';

interface Sizes { N: number; H: number; KVH: number; D: number; cu: number[]; window?: number }

function refForward(q: Float64Array, k: Float64Array, v: Float64Array, s: Sizes, scale: number) {
  const { H, KVH, D, cu } = s;
  const out = new Float64Array(s.N * H * D), lse = new Float64Array(s.N * H), P: Map<string, Float64Array> = new Map();
  for (let g = 0; g + 1 < cu.length; g++) {
    for (let i = cu[g]; i < cu[g + 1]; i++) {
      for (let h = 0; h < H; h++) {
        const kh = Math.floor(h / (H / KVH));
        const sc = new Float64Array(i - cu[g] + 1);
        for (let j = cu[g]; j <= i; j++) {
          let d = 0;
          for (let c = 0; c < D; c++) d += q[(i * H + h) * D + c] * k[(j * KVH + kh) * D + c];
          sc[j - cu[g]] = s.window && i - j >= s.window ? -Infinity : d * scale;
        }
        const m = Math.max(...sc);
        let z = 0;
        for (const x of sc) z += Math.exp(x - m);
        lse[i * H + h] = m + Math.log(z);
        const p = sc.map((x) => Math.exp(x - m) / z);
        P.set(`${i},${h}`, p);
        for (let j = cu[g]; j <= i; j++) for (let c = 0; c < D; c++) out[(i * H + h) * D + c] += p[j - cu[g]] * v[(j * KVH + kh) * D + c];
      }
    }
  }
  return { out, lse, P };
}

function refBackward(dout: Float64Array, q: Float64Array, k: Float64Array, v: Float64Array, s: Sizes, scale: number) {
  const { H, KVH, D, cu } = s;
  const { P } = refForward(q, k, v, s, scale);
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length), dv = new Float64Array(v.length);
  for (let g = 0; g + 1 < cu.length; g++) {
    for (let i = cu[g]; i < cu[g + 1]; i++) {
      for (let h = 0; h < H; h++) {
        const kh = Math.floor(h / (H / KVH));
        const p = P.get(`${i},${h}`)!;
        const dp = new Float64Array(p.length);
        for (let j = cu[g]; j <= i; j++) {
          let d = 0;
          for (let c = 0; c < D; c++) {
            d += dout[(i * H + h) * D + c] * v[(j * KVH + kh) * D + c];
            dv[(j * KVH + kh) * D + c] += p[j - cu[g]] * dout[(i * H + h) * D + c];
          }
          dp[j - cu[g]] = d;
        }
        let pdp = 0;
        for (let t = 0; t < p.length; t++) pdp += p[t] * dp[t];
        for (let j = cu[g]; j <= i; j++) {
          const ds = p[j - cu[g]] * (dp[j - cu[g]] - pdp) * scale;
          for (let c = 0; c < D; c++) {
            dq[(i * H + h) * D + c] += ds * k[(j * KVH + kh) * D + c];
            dk[(j * KVH + kh) * D + c] += ds * q[(i * H + h) * D + c];
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}

const cases: Array<[string, Sizes]> = [
  ['one short segment, MHA', { N: 5, H: 3, KVH: 3, D: 8, cu: [0, 5] }],
  ['packed with an empty segment, GQA 6/2, D=10, long segments', { N: 150, H: 6, KVH: 2, D: 10, cu: [0, 3, 3, 80, 150] }],
  ['MQA (one KV head), single-token segments', { N: 9, H: 4, KVH: 1, D: 6, cu: [0, 1, 2, 3, 9] }],
  ['sliding window 37 over packed long segments (window inside and across tiles)', { N: 230, H: 4, KVH: 2, D: 8, cu: [0, 20, 230], window: 37 }],
  ['sliding window 1 (each token sees itself only)', { N: 10, H: 2, KVH: 1, D: 4, cu: [0, 10], window: 1 }],
  ['sliding window 100 over a 150-token segment', { N: 150, H: 2, KVH: 2, D: 16, cu: [0, 150], window: 100 }],
  // head dim deeper than a K block of the portable and AVX2 kernels (256): the packed tiles run in two
  ['head dim 300, GQA 4/2, two segments', { N: 90, H: 4, KVH: 2, D: 300, cu: [0, 70, 90] }],
];

poisonAndRestoreIsa();

// The softmax rows' exponentials run on each ISA's vector code (cpu/xent_row.inc).
describe.each(isas)('attention op vs float64 on %s', (isa) => {
  beforeAll(() => runtime.setIsa(isa));
  for (const [name, s] of cases) {
    it(name, () => {
      const q = randn(s.N * s.H * s.D, 1, 1.5), k = randn(s.N * s.KVH * s.D, 2, 1.5), v = randn(s.N * s.KVH * s.D, 3);
      const dout = randn(s.N * s.H * s.D, 4);
      const scale = 1 / Math.sqrt(s.D);
      const A = addon();
      const qh = f32(q, [s.N, s.H, s.D]), kh = f32(k, [s.N, s.KVH, s.D]), vh = f32(v, [s.N, s.KVH, s.D]), cu = i32(s.cu);
      const fw = A.opAttention(qh, kh, vh, cu, scale, s.window ?? 0);
      const ref = refForward(Float64Array.from(q), Float64Array.from(k), Float64Array.from(v), s, scale);
      expect(relErr(arr(fw.out), ref.out)).toBeLessThan(1e-5);
      expect(relErr(arr(fw.lse), ref.lse)).toBeLessThan(1e-5);
      const bw = A.opAttentionBackward(f32(dout, [s.N, s.H, s.D]), qh, kh, vh, fw.out, fw.lse, cu, scale, s.window ?? 0);
      const rb = refBackward(Float64Array.from(dout), Float64Array.from(q), Float64Array.from(k), Float64Array.from(v), s, scale);
      if (s.window === 1) {
        // softmax over a single key: no gradient reaches q or k
        expect(Math.max(...Array.from(arr(bw.dq), Math.abs), ...Array.from(arr(bw.dk), Math.abs))).toBeLessThan(1e-6);
      } else {
        expect(relErr(arr(bw.dq), rb.dq)).toBeLessThan(1e-5);
        expect(relErr(arr(bw.dk), rb.dk)).toBeLessThan(1e-5);
      }
      expect(relErr(arr(bw.dv), rb.dv)).toBeLessThan(1e-5);
      if (s.window) {
        // decode through a KV cache with the same window gives the same outputs (single-segment cases)
        if (s.cu.length === 2) {
          const kc = f32(new Float32Array(s.N * s.KVH * s.D), [s.N, s.KVH, s.D]), vc = f32(new Float32Array(s.N * s.KVH * s.D), [s.N, s.KVH, s.D]);
          const dec = arr(A.opAttentionDecode(qh, kh, vh, kc, vc, 0, scale, s.window));
          expect(relErr(dec, ref.out)).toBeLessThan(1e-5);
        }
      }
      // attention never crosses a segment: the first token of a segment attends to itself only
      for (let g = 0; g + 1 < s.cu.length; g++) {
        if (s.cu[g + 1] === s.cu[g]) continue;
        const i = s.cu[g];
        const out = arr(fw.out);
        for (let h = 0; h < s.H; h++) {
          const kvh = Math.floor(h / (s.H / s.KVH));
          for (let c = 0; c < s.D; c++) expect(out[(i * s.H + h) * s.D + c]).toBeCloseTo(v[(i * s.KVH + kvh) * s.D + c], 5);
        }
      }
    });
  }
});

describe('attention op', () => {
  it('bf16 activations: the f32 op on the same (widened) values, each output rounded once; mixed dtypes refused', () => {
    const s: Sizes = { N: 41, H: 4, KVH: 2, D: 10, cu: [0, 17, 41] };
    const A = addon();
    const bf = (v: Float32Array, shape: number[]) => handleOf(Tensor.from(v, shape, { dtype: 'bf16' }));
    const q = bf(randn(s.N * s.H * s.D, 5), [s.N, s.H, s.D]), k = bf(randn(s.N * s.KVH * s.D, 6), [s.N, s.KVH, s.D]);
    const v = bf(randn(s.N * s.KVH * s.D, 7), [s.N, s.KVH, s.D]), dout = bf(randn(s.N * s.H * s.D, 8), [s.N, s.H, s.D]);
    const wide = (h: TensorHandle) => f32(arr(h), h.shape);
    const round = (x: Float32Array) => Array.from(new Uint32Array(roundBf16(x).buffer));
    const bits = (h: TensorHandle) => Array.from(new Uint32Array(arr(h).buffer));
    const cu = i32(s.cu), scale = 0.3;
    const f16 = A.opAttention(q, k, v, cu, scale, 0), f32r = A.opAttention(wide(q), wide(k), wide(v), cu, scale, 0);
    expect(f16.out.dtype).toBe('bf16');
    expect(bits(f16.out)).toEqual(round(arr(f32r.out)));
    expect(bits(f16.lse)).toEqual(bits(f32r.lse));  // lse stays f32
    const b16 = A.opAttentionBackward(dout, q, k, v, f16.out, f16.lse, cu, scale, 0);
    const b32 = A.opAttentionBackward(wide(dout), wide(q), wide(k), wide(v), wide(f16.out), f16.lse, cu, scale, 0);
    for (const key of ['dq', 'dk', 'dv'] as const) {
      expect(b16[key].dtype).toBe('bf16');
      expect(bits(b16[key]), key).toEqual(round(arr(b32[key])));
    }
    expect(errCode(() => A.opAttention(q, wide(k), v, cu, scale, 0))).toMatch(/E_DTYPE: 'k' must be bf16 like q/);
  });

  it('the float64 backward reference agrees with finite differences', () => {
    const s: Sizes = { N: 6, H: 2, KVH: 1, D: 4, cu: [0, 2, 6] };
    const q = Float64Array.from(randn(48, 5)), k = Float64Array.from(randn(24, 6)), v = Float64Array.from(randn(24, 7)), dout = Float64Array.from(randn(48, 8));
    const loss = () => refForward(q, k, v, s, 0.5).out.reduce((a, x, i) => a + x * dout[i], 0);
    const rb = refBackward(dout, q, k, v, s, 0.5);
    for (const [t, g] of [[q, rb.dq], [k, rb.dk], [v, rb.dv]] as const) {
      for (const i of [0, 7, t.length - 1]) {
        const o = t[i];
        t[i] = o + 1e-6;
        const lp = loss();
        t[i] = o - 1e-6;
        const lm = loss();
        t[i] = o;
        expect(Math.abs((lp - lm) / 2e-6 - g[i])).toBeLessThan(1e-6);
      }
    }
  });

  it('decode with a KV cache (chunks 7, 1, 1, 70) equals attention over the whole sequence', () => {
    const N = 79, H = 6, KVH = 2, D = 10, scale = 0.3;
    const q = randn(N * H * D, 11), k = randn(N * KVH * D, 12), v = randn(N * KVH * D, 13);
    const A = addon();
    const full = arr(A.opAttention(f32(q, [N, H, D]), f32(k, [N, KVH, D]), f32(v, [N, KVH, D]), i32([0, N]), scale).out);
    const kc = f32(new Float32Array(90 * KVH * D), [90, KVH, D]), vc = f32(new Float32Array(90 * KVH * D), [90, KVH, D]);
    let start = 0;
    for (const n of [7, 1, 1, 70]) {
      const sl = (x: Float32Array, w: number) => x.subarray(start * w * D, (start + n) * w * D);
      const out = arr(A.opAttentionDecode(f32(sl(q, H), [n, H, D]), f32(sl(k, KVH), [n, KVH, D]), f32(sl(v, KVH), [n, KVH, D]), kc, vc, start, scale));
      expect(relErr(out, full.subarray(start * H * D, (start + n) * H * D))).toBeLessThan(1e-6);
      start += n;
    }
    expect(errCode(() => A.opAttentionDecode(f32(q.subarray(0, 2 * H * D), [2, H, D]), f32(k.subarray(0, 2 * KVH * D), [2, KVH, D]), f32(v.subarray(0, 2 * KVH * D), [2, KVH, D]), kc, vc, 89, scale))).toMatch(/^E_RANGE.*KV cache/);
  });

  it('bad arguments are errors, not crashes', () => {
    const A = addon();
    const q = f32(new Float32Array(4 * 3 * 2), [4, 3, 2]), k = f32(new Float32Array(4 * 2 * 2), [4, 2, 2]);
    const k1 = f32(new Float32Array(4 * 1 * 2), [4, 1, 2]);
    expect(errCode(() => A.opAttention(q, k, k, i32([0, 4]), 1))).toMatch(/^E_SHAPE.*multiple of KV heads/);
    expect(errCode(() => A.opAttention(q, k1, k1, i32([0, 3]), 1))).toMatch(/^E_ARG.*end at N = 4/);
    expect(errCode(() => A.opAttention(q, k1, k1, i32([0, 3, 2, 4]), 1))).toMatch(/^E_ARG.*not decrease/);
    expect(errCode(() => A.opAttention(q, k1, f32(new Float32Array(6), [3, 1, 2]), i32([0, 4]), 1))).toMatch(/^E_SHAPE.*'v'/);
    expect(errCode(() => A.opAttention(q, k1, k1, i32([0, 4]), NaN))).toMatch(/^E_ARG.*scale/);
  });
});
