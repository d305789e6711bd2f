// Validation split: a seeded, reproducible choice of held-out examples.
//
// The held-out set depends only on (number of examples, seed, size): the same data and seed always hold
// out the same examples, whatever the training order. Both index lists are returned in ascending order.
import { ErrorCode, InstillError } from '../errors.js';
import { seededPermutation } from './shuffle.js';

/** Stream index of the split's permutation (distinct from the epoch streams). */
const SPLIT_STREAM = 0x5eed;

export interface SplitOptions {
  /** A fraction in [0, 1) of the examples, or a count >= 1 of examples, to hold out. */
  validation: number;
  seed?: number;
}

export function splitIndices(n: number, options: SplitOptions): { train: Int32Array; validation: Int32Array } {
  const v = options.validation;
  if (!(Number.isFinite(v) && v >= 0 && (v < 1 || Number.isInteger(v)))) {
    throw new InstillError(ErrorCode.ARG, `Expected a fraction in [0, 1) or an integer count for validation but received ${String(v)}`);
  }
  const k = v < 1 ? Math.round(n * v) : v;
  if (k >= n) throw new InstillError(ErrorCode.ARG, `validation split of ${k} examples leaves none of the ${n} for training`);
  const perm = seededPermutation(n, options.seed ?? 0, SPLIT_STREAM);
  const validation = perm.slice(0, k).sort();
  const train = perm.slice(k).sort();
  return { train, validation };
}
