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

/** The rows of a flat (B·T) int64 array from a reference file, as token rows. */
export function tokenRows(a: BigInt64Array, B: number, T: number): number[][] {
  return Array.from({ length: B }, (_, b) => Array.from(a.subarray(b * T, (b + 1) * T), Number));
}
