// test/helpers/diff.ts: the GPU tests report with it where results differ, so it is checked here, where CI runs.
import { describe, expect, it } from 'vitest';

import { beyondDiff, bitsDiff, ranges, toleranceDiff } from './diff.js';

describe('diff reports', () => {
  it('ranges: runs of integers, unsorted and repeated input, cut after max', () => {
    expect(ranges([5, 0, 1, 2, 2, 7, 8])).toBe('0–2, 5, 7–8');
    expect(ranges([])).toBe('');
    expect(ranges([0, 2, 4, 6, 8], 3)).toBe('0, 2, 4, … (5 ranges)');
  });

  it('bitsDiff: null on equal bits; −0 is not +0; NaNs by their bits (Float32Array) or as equal (others)', () => {
    const a = Float32Array.of(1, -0, NaN, 2.5);
    expect(bitsDiff(a, Float32Array.from(a))).toBeNull();
    expect(bitsDiff(Float32Array.of(0), Float32Array.of(-0))).toMatch(/^1 of 1 elements differ in bits/);
    const poison = new Float32Array(new Uint32Array([0xffffffff]).buffer);  // the allocator's 0xff bytes: a NaN
    expect(bitsDiff(poison, Float32Array.of(NaN))).toMatch(/^1 of 1 elements differ in bits; 1 not finite/);
    expect(bitsDiff([NaN, -0], [NaN, -0])).toBeNull();
    expect(bitsDiff([0], [-0])).not.toBeNull();
    expect(bitsDiff(Float32Array.of(1, 2), Float32Array.of(1))).toMatch(/lengths differ/);
  });

  it('bitsDiff on a (tokens, heads, dims) result: where, and where in the segments and tiles', () => {
    // 200 tokens in segments [0, 70) and [70, 200), 3 heads of 4 dims; head 1's dims 2–3 wrong on tokens 70–72
    // (a segment's first tokens) and token 134 (row 6 of its tile, 64 tokens into its segment), one of them NaN
    const [n, h, d] = [200, 3, 4];
    const want = Float32Array.from({ length: n * h * d }, (_, i) => Math.sin(i));
    const got = Float32Array.from(want);
    const at = (t: number, hh: number, dd: number) => (t * h + hh) * d + dd;
    for (const t of [70, 71, 72, 134]) for (const dd of [2, 3]) got[at(t, 1, dd)] += 0.25;
    got[at(71, 1, 3)] = NaN;
    const r = bitsDiff(got, want, { shape: [n, h, d], segs: [0, 70, 200] });
    expect(r).not.toBeNull();
    expect(r).toContain('8 of 2400 elements differ in bits');
    expect(r).toContain('1 not finite');
    expect(r).toContain('largest |got − want| Infinity at [71, 1, 3]');
    expect(r).toContain('rows 70–72, 134');
    expect(r).toContain('row mod 64: 6–8');
    expect(r).toContain('heads 1');
    expect(r).toContain('dims 2–3');
    expect(r).toContain('segments 1 of 2; of 4 rows, 3 in their segment\'s first 64 tokens, 0 in its last 64');
  });

  it('toleranceDiff: the elements beyond tol of the largest |want|, with the largest of them', () => {
    const want = Float32Array.of(10, -4, 2, 0.5, 1, 3);
    const got = Float32Array.of(10.05, -4.2, 2, 0.5, 1.3, 3);
    // bound 0.1 (1e-2 of 10): -4.2 (0.2) and 1.3 (0.3) are beyond it, 10.05 is not
    const r = toleranceDiff(got, want, 1e-2, { shape: [3, 2] });
    expect(r).toMatch(/^2 of 6 elements beyond 0\.100 \(0\.01 of max \|want\|\)/);
    expect(r).toContain('at [2, 0]');
    expect(r).toContain('rows 0, 2');
    expect(r).toContain('cols 0–1');
  });

  it('beyondDiff: a bound of the caller\'s (closeScaled: tol of the terms\' magnitude), NaN beyond any bound', () => {
    const r = beyondDiff(Float32Array.of(0.001, NaN, 5), Float32Array.of(0, 1, 5), 0.01, { shape: [3] }, 'tol of the terms');
    expect(r).toMatch(/^1 of 3 elements beyond 0\.0100 \(tol of the terms\); 1 not finite; largest \|got − want\| Infinity at \[1\]/);
  });
});
