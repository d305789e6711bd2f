// bench/gpu/tuned.py, which bench/gpu-check.sh runs on the log of its tuned step (INSTILL_CUBLASLT_TUNE=on
// INSTILL_CUBLASLT_VERBOSE=1): the tuned keys cublaslt.cu printed, the largest gain first, and how many changed the
// split of K. Checked here because the GPU run that needs it is rare and short.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const tuned = (file: string, ...args: string[]) => spawnSync('python3', ['bench/gpu/tuned.py', file, ...args], { encoding: 'utf8' });

describe('bench/gpu/tuned.py', () => {
  const dir = mkdtempSync(join(tmpdir(), 'instill-tuned-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('lists the tuned keys, the largest gain first, and counts those whose split of K changed', () => {
    const log = join(dir, 'bench.log');
    writeFileSync(log, [
      'instill: cuBLASLt in use (libcublasLt.so.13 (loaded))',
      "instill: cuBLASLt tuned M 2048 N 48 K 2048: 11 algorithms, heuristic's first 9.1 us (split-K 1), chose #7 3.2 us (split-K 8)",
      'some other output',
      "instill: cuBLASLt tuned M 2048 N 2048 K 2048: 8 algorithms, heuristic's first 40.0 us (split-K 1), chose #0 40.0 us (split-K 1)",
      "instill: cuBLASLt tuned M 48 N 2048 K 2048: 12 algorithms, heuristic's first 17.0 us (split-K 2), chose #9 4.0 us (split-K 16)",
      // an older binary's line: no split-K fields
      "instill: cuBLASLt tuned M 64 N 64 K 64 (tf32): 8 algorithms, heuristic's first 3.0 us, chose #2 2.5 us",
    ].join('\n'));
    const p = tuned(log);
    expect(p.status, p.stderr).toBe(0);
    const lines = p.stdout.trim().split('\n');
    expect(lines[2]).toBe('| 48 | 2048 | 2048 | 12 | 17.0 (2) | 4.0 (16) | 13.0 |');
    expect(lines[3]).toBe('| 2048 | 48 | 2048 | 11 | 9.1 (1) | 3.2 (8) | 5.9 |');
    expect(lines[4]).toBe('| 64 | 64 | 64 tf32 | 8 | 3.0 (1) | 2.5 (1) | 0.5 |');
    expect(lines[5]).toBe('| 2048 | 2048 | 2048 | 8 | 40.0 (1) | 40.0 (1) | 0.0 |');
    // 1 -> 8 and 2 -> 16 changed the split; 13.0 + 5.9 + 0.5 + 0
    expect(lines.at(-1)).toBe("4 keys; 2 kept a split of K other than the heuristic's first; summed gain per call of each key 19.4 us");
    const top = tuned(log, '--top', '1');
    expect(top.stdout.trim().split('\n')).toHaveLength(4);
  });

  it('says so, and exits 1, when the log has no tuned key', () => {
    const log = join(dir, 'empty.log');
    writeFileSync(log, 'nothing tuned here\n');
    const p = tuned(log);
    expect(p.status).toBe(1);
    expect(p.stdout).toMatch(/no tuned keys/);
  });
});
