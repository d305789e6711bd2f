// The order of sums behind stop 33's `delta_rows` (native/cuda/attention_simple.cu: Δ a warp a token row standing in
// for a warp a (row, head)), replayed on the CPU in f32 (Math.fround). The replay follows the kernel's loops, lanes
// and shuffles (a warp is 32 values; __shfl_xor_sync, __shfl_down_sync and __shfl_sync as array reads), and the two
// kernels' results must agree bit for bit on random data of awkward sizes. The GPU test
// (test/cuda/next/delta_rows.test.ts) checks the kernel itself; this checks, without a GPU, that the lane mapping the
// piece rests on is the one its comments derive. A wrong mapping (a shuffle by xor where the kernel shifts down, or
// lane a + 4t's chunk taken from lane a + 8t) is one of the cases that must fail. And `rope_rows` (native/cuda/rope.cu),
// whose math is rope_qk's element for element: its lanes must visit every (head, column) of a token once. (Stop 36
// took out norm_rows, whose replay was here too.)
import { describe, expect, it } from 'vitest';

import { randn, rng } from '../../bench/kernels/reference.js';

const f = Math.fround;
const add = (a: number, b: number) => f(a + b);
const fma = (a: number, b: number, c: number) => f(a * b + c);  // (a * b exact in a double; the same on both sides)
type Warp = number[];
const xor = (v: Warp, o: number): Warp => v.map((_, l) => v[l ^ o]);
const down = (v: Warp, o: number): Warp => v.map((x, l) => (l + o < 32 ? v[l + o] : x));
const from = (v: Warp, src: (l: number) => number): Warp => v.map((_, l) => v[src(l) % 32]);
const warpSum = (v: Warp): Warp => {  // common.cuh's warp_sum: v += shfl_xor(v, o), o = 16 .. 1
  for (let o = 16; o > 0; o >>= 1) {
    const other = xor(v, o);
    v = v.map((x, l) => add(x, other[l]));
  }
  return v;
};
const lanes = (fn: (l: number) => number): Warp => Array.from({ length: 32 }, (_, l) => fn(l));

// Δ of one (row, head): the per-(row, head) kernel, lane l chaining elements l + 32t
function deltaHead(d: ArrayLike<number>, o: ArrayLike<number>): number {
  const D = d.length;
  return warpSum(lanes((l) => {
    let s = 0;
    for (let e = l; e < D; e += 32) s = fma(d[e], o[e], s);
    return s;
  }))[0];
}
// Δ of a token row, every head: delta_rows' kernel (kLanes = D / 8 lanes a head, 32 / kLanes heads a round)
function deltaRow(d: ArrayLike<number>, o: ArrayLike<number>, H: number, D: number, srcOf = (l: number, t: number) => l + 4 * t,
  firstShuffle: (v: Warp) => Warp = (v) => down(v, 2)): number[] {
  const kLanes = D / 8, at = 32 / kLanes, out: number[] = [];
  for (let h0 = 0; h0 < H; h0 += at) {
    const head = (l: number) => h0 + Math.floor(l / kLanes), sub = (l: number) => l % kLanes;
    const el = (arr: ArrayLike<number>, l: number, b: number) => (head(l) < H ? arr[head(l) * D + sub(l) * 8 + b] : 0);
    const acc = Array.from({ length: 8 }, (_, b) => lanes((l) => fma(el(d, l, b), el(o, l, b), 0)));
    for (let t = 1; t < D / 32; ++t) {
      for (let b = 0; b < 8; ++b) {
        const dt = from(lanes((l) => el(d, l, b)), (l) => srcOf(l, t)), ot = from(lanes((l) => el(o, l, b)), (l) => srcOf(l, t));
        acc[b] = acc[b].map((x, l) => fma(dt[l], ot[l], x));
      }
    }
    for (let b = 0; b < 8; ++b) { const v = firstShuffle(acc[b]); acc[b] = acc[b].map((x, l) => add(x, v[l])); }
    for (let b = 0; b < 8; ++b) { const v = down(acc[b], 1); acc[b] = acc[b].map((x, l) => add(x, v[l])); }
    for (let b = 0; b < 4; ++b) acc[b] = acc[b].map((x, l) => add(x, acc[b + 4][l]));
    acc[0] = acc[0].map((x, l) => add(x, acc[2][l]));
    acc[1] = acc[1].map((x, l) => add(x, acc[3][l]));
    for (let l = 0; l < 32; l += kLanes) if (head(l) < H) out.push(add(acc[0][l], acc[1][l]));
  }
  return out;
}

describe('the orders of sums of the same-bits pieces (CPU replay)', () => {
  it.each([
    { H: 32, D: 64 }, { H: 6, D: 64 }, { H: 5, D: 128 }, { H: 3, D: 128 },
  ])('delta_rows: Δ of a token row of $H heads of $D, as a warp a (row, head) sums it', ({ H, D }) => {
    const r = rng(90 + H + D);
    for (let row = 0; row < 4; ++row) {
      const d = randn(r, H * D).map(f), o = randn(r, H * D).map(f);
      const want = Array.from({ length: H }, (_, h) => deltaHead(d.slice(h * D, h * D + D), o.slice(h * D, h * D + D)));
      const got = deltaRow(d, o, H, D);
      expect(got.length).toBe(H);
      got.forEach((x, h) => expect(Object.is(x, want[h]), `head ${h}`).toBe(true));
      if (row === 0) {  // the mappings a slip would give: they must not agree everywhere
        const same = (g: number[]) => g.every((x, h) => Object.is(x, want[h]));
        expect(same(deltaRow(d, o, H, D, (l, t) => l + 8 * t))).toBe(false);  // another head's (D 64) or slot's chunks
        expect(same(deltaRow(d, o, H, D, undefined, (v) => xor(v, 1)))).toBe(false);
      }
    }
  });

  it.each([
    { half: 4, heads: 4 }, { half: 32, heads: 40 }, { half: 32, heads: 3 }, { half: 64, heads: 9 }, { half: 128, heads: 6 },
  ])('rope_rows: a warp visits each of $heads heads\' $half column pairs once (four a lane)', ({ half, heads }) => {
    const seen = new Map<string, number>();
    const per = half / 4;
    for (let l = 0; l < 32; ++l) {  // the kernel's loops: i = 4·(l % per); hh = l / per, += 32 / per
      const i = 4 * (l % per);
      for (let hh = Math.floor(l / per); hh < heads; hh += 32 / per) {
        for (let t = 0; t < 4; ++t) seen.set(`${hh}:${i + t}`, (seen.get(`${hh}:${i + t}`) ?? 0) + 1);
      }
    }
    expect(seen.size).toBe(heads * half);
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
  });
});
