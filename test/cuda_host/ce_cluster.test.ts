// `ce_cluster`'s split of a row (native/cuda/cross_entropy.cu, ce_cluster_kernel), replayed on the CPU: a row of V
// columns over a cluster of kClusterBlocks blocks, block b taking cluster_segment(V) columns from b·segment, each of
// its kClusterThreads threads kClusterChunks chunks of 8 columns (chunk i of thread t at segment column 8·(t + threads·i),
// the first n of its 8 valid). Every column below V must be held by exactly one (block, thread, chunk, element), for
// every V up to kClusterMaxV, the largest ce_cluster_takes lets through; one past it a column would be left out. The
// constants are read from the source, so that a change there is replayed here. The GPU test
// (test/cuda/next/ce_cluster.test.ts) checks the kernel itself.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { packageRoot } from '../../src/native.js';

const src = readFileSync(join(packageRoot, 'native', 'cuda', 'cross_entropy.cu'), 'utf8');
const constant = (name: string): number => {
  const m = new RegExp(`\\b${name} = (\\d+)`).exec(src);
  if (!m) throw new Error(`cross_entropy.cu: no ${name}`);
  return Number(m[1]);
};
const BLOCKS = constant('kClusterBlocks'), THREADS = constant('kClusterThreads'), CHUNKS = constant('kClusterChunks');
const MAX_V = BLOCKS * THREADS * CHUNKS * 8;  // kClusterMaxV as the source computes it

/** cluster_segment(V): V / blocks rounded up to a multiple of 8. */
const segment = (V: number) => Math.ceil(Math.ceil(V / BLOCKS) / 8) * 8;

/** How many times the kernel's loops touch each column of a V-column row (an array of V counts), and how many
 * columns past V the chunks hold (loaded but neither summed nor given a gradient). */
function coverage(V: number): { counts: Uint8Array; beyond: number } {
  const counts = new Uint8Array(V);
  let beyond = 0;
  const seg = segment(V);
  for (let b = 0; b < BLOCKS; b++) {
    const c0 = b * seg, c1 = Math.min(c0 + seg, V);
    for (let t = 0; t < THREADS; t++) {
      for (let i = 0; i < CHUNKS; i++) {
        const c = c0 + 8 * (t + THREADS * i);
        const n = Math.max(0, Math.min(8, c1 - c));
        for (let e = 0; e < n; e++) counts[c + e]++;
        if (n > 0 && n < 8) beyond += 8 - n;
      }
    }
  }
  return { counts, beyond };
}

describe('ce_cluster: a row over a cluster of blocks (cross_entropy.cu)', () => {
  it('the source\'s constants: 8 blocks (a portable cluster), rows of up to 131072 columns (Llama 3\'s 128256 fits)', () => {
    expect(BLOCKS).toBe(8);
    expect(MAX_V).toBe(131072);
    expect(src).toContain('constexpr int64_t kClusterMaxV = int64_t{kClusterBlocks} * kClusterThreads * kClusterChunks * 8;');
    expect(src).toMatch(/V <= kClusterMaxV/);
  });

  it.each([1, 7, 8, 9, 100, 301, 5003, 32000, 128256, 131064, 131071, 131072])('V %i: every column held once', (V) => {
    const { counts, beyond } = coverage(V);
    expect(counts.every((k) => k === 1)).toBe(true);
    expect(beyond).toBeLessThan(8);  // only the last chunk of the row may run past V (into the row's 8-aligned end)
  });

  it('V 131073, one past kClusterMaxV: a column would be left out (so ce_cluster_takes refuses it)', () => {
    const { counts } = coverage(MAX_V + 1);
    expect(counts.filter((k) => k === 0).length).toBeGreaterThan(0);
  });
});
