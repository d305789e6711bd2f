// Shared set-up of the kernel tests: every ISA this CPU runs, and poisoned
// (NaN-filled) new tensors for the duration of a test file.
import { afterAll, beforeAll } from 'vitest';

import { runtime } from '../../src/index.js';

/** Every ISA this CPU runs, lowest first. */
export const isas: string[] = runtime.info().isas;

/**
 * Fills every new tensor with NaN while the file's tests run (so an unwritten
 * output or a read of unwritten scratch shows), and restores the best ISA after.
 */
export function poisonAndRestoreIsa(): void {
  const best = runtime.info().isa;
  beforeAll(() => runtime.setPoison(true));
  afterAll(() => {
    runtime.setPoison(false);
    runtime.setIsa(best);
  });
}
