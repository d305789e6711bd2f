// Runs fn with the op profile on and returns what ran beside fn's value: the ops and their "op/part" rows by
// name (runtime.opProfile()), and each one's calls. The profile is switched off again however fn ends, also when
// its promise rejects. GPU tests read the parts to see which kernels a path took.
import { runtime } from '../../src/index.js';

export interface Profiled<T> {
  value: T;
  /** Names of the ops and parts that ran, largest first. */
  parts: string[];
  /** Calls per op or part. */
  calls: Record<string, number>;
}

export function withOpProfile<T>(fn: () => Promise<T>): Promise<Profiled<T>>;
export function withOpProfile<T>(fn: () => T): Profiled<T>;
export function withOpProfile<T>(fn: () => T | Promise<T>): Profiled<T> | Promise<Profiled<T>> {
  const read = (value: T): Profiled<T> => {
    const rows = runtime.opProfile();
    return { value, parts: rows.map((o) => o.op), calls: Object.fromEntries(rows.map((o) => [o.op, o.calls])) };
  };
  runtime.setOpProfile(true);
  let pending = false;
  try {
    const r = fn();
    if (r instanceof Promise) {
      pending = true;
      return r.then(read).finally(() => runtime.setOpProfile(false));
    }
    return read(r);
  } finally {
    if (!pending) runtime.setOpProfile(false);
  }
}
