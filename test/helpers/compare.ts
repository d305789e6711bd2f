// Comparisons the tests share. relError (max |got − ref| / max |ref|, Infinity for
// NaN, bench/kernels/reference.ts) is the one measure; relErr adds the assertions
// that make a comparison mean something.
import { expect } from 'vitest';

import { relError } from '../../bench/kernels/reference.js';

export { relError };

/** relError, with equal lengths and a reference that is not all zeros asserted. */
export function relErr(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  expect(got.length).toBe(ref.length);
  let m = 0;
  for (let i = 0; i < ref.length; i++) m = Math.max(m, Math.abs(ref[i]));
  expect(m).toBeGreaterThan(0);
  return relError(got, ref);
}

/** ‖a − b‖₂ / ‖b‖₂ (METHOD.md's measure for bf16 results); Infinity for a non-finite element of a. */
export function relNorm(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let d = 0, m = 0;
  for (let i = 0; i < b.length; i++) {
    if (!Number.isFinite(a[i])) return Infinity;
    d += (a[i] - b[i]) ** 2;
    m += b[i] ** 2;
  }
  return m === 0 ? Math.sqrt(d) : Math.sqrt(d / m);
}

/** The rows of a flat (B·T) int64 array from a reference file, as token rows. */
export function tokenRows(a: BigInt64Array, B: number, T: number): number[][] {
  return Array.from({ length: B }, (_, b) => Array.from(a.subarray(b * T, (b + 1) * T), Number));
}
