// The OpenBLAS reference (bench/native/reference.cpp, built as instill_bench_ref.node
// next to the addon), loaded only by the benchmark.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { packageRoot } from '../../src/native.js';

export interface OpenBlas {
  library: string;
  setThreads(n: number): void;
  sgemm(a: Float32Array, b: Float32Array, c: Float32Array, m: number, n: number, k: number, transA: boolean, transB: boolean, alpha: number, beta: number): void;
  loraComposed(...args: (Float32Array | number)[]): void;
}

interface RefModule {
  available(): string | null;
  setThreads(n: number): void;
  sgemm: OpenBlas['sgemm'];
  loraComposed: OpenBlas['loraComposed'];
}

export function loadOpenBlas(threads: number): OpenBlas | { unavailable: string } {
  const path = join(packageRoot, 'build', 'Release', 'instill_bench_ref.node');
  if (!existsSync(path)) return { unavailable: `${path} is not built (npm run build:native)` };
  // OpenBLAS's idle threads spin for 2^28 cycles (~0.1 s) after every call, taking the
  // cores from whatever is timed next; with the shortest timeout the alternation is fair.
  // Read once when the library is loaded, so it is set before.
  process.env.OPENBLAS_THREAD_TIMEOUT ??= '4';
  const mod = createRequire(import.meta.url)(path) as RefModule;
  const library = mod.available();
  if (!library) return { unavailable: 'libopenblas.so.0 not found (Debian: apt-get install libopenblas0-pthread)' };
  mod.setThreads(threads);
  return { library, setThreads: mod.setThreads, sgemm: mod.sgemm, loraComposed: mod.loraComposed };
}
