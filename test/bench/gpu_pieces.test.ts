// bench/gpu/pieces.py decides, on a lent GPU, which INSTILL_CUDA_NEXT pieces gpu-check.sh leaves out of its
// step A/Bs (those whose tests failed or never finished). A GPU run is rare and short: a piece that faults in
// an A/B it should have been left out of costs the run. So the script is checked here, where CI runs: that it
// knows the engine's pieces (it reads them from native/runtime/next.cpp: when that list's layout changed, it
// silently knew none), and what it leaves out of a vitest log.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { runtime } from '../../src/index.js';
import { withEnv } from '../helpers/env.js';

const pieces = (...args: string[]) => {
  const p = spawnSync('python3', ['bench/gpu/pieces.py', ...args], { encoding: 'utf8' });
  expect(p.status, `python3 bench/gpu/pieces.py ${args.join(' ')}: ${p.stderr}`).toBe(0);
  return p.stdout.trim().split('\n').filter(Boolean);
};

describe('bench/gpu/pieces.py', () => {
  const dir = mkdtempSync(join(tmpdir(), 'instill-pieces-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const all = withEnv('INSTILL_CUDA_NEXT', 'all', () => runtime.nextKernels());

  it('knows every piece the engine has', () => {
    expect(all.length).toBeGreaterThan(0);
    expect(pieces('--list')).toEqual(all);
  });

  // A vitest log as gpu-check.sh keeps it (colors and all): per file a summary line, then each failed test.
  const log = (failed: string[], unfinished: string[]) => {
    const files = all.map((p) => (p === 'wb_cache' ? 'test/cuda/lora_reference.test.ts' : p === 'attn_prep' ? 'test/cuda/next/flash_mt.test.ts' : `test/cuda/next/${p}.test.ts`));
    const lines = [' \x1b[1mRUN\x1b[22m  v4.1.12 /repo', ''];
    for (const f of new Set([...files, 'test/cuda/ops.test.ts'])) {
      if (unfinished.includes(f)) continue;
      const bad = failed.filter((t) => t.startsWith(f));
      lines.push(bad.length ? ` \x1b[31m❯\x1b[39m ${f} (9 tests | ${bad.length} failed) 3021ms` : ` \x1b[32m✓\x1b[39m ${f} (9 tests) 2113ms`);
    }
    lines.push('', '⎯⎯⎯⎯⎯⎯⎯ Failed Tests ⎯⎯⎯⎯⎯⎯⎯', '');
    for (const t of failed) lines.push(` \x1b[41mFAIL\x1b[49m  ${t}`, 'AssertionError: dq: 3 of 90 elements differ in bits', '');
    const path = join(dir, `log-${failed.length}-${unfinished.length}.txt`);
    writeFileSync(path, lines.join('\n'));
    return path;
  };

  it('leaves out the pieces failed tests name, and those whose test file did not finish', () => {
    expect(pieces(log([], []))).toEqual([]);
    const got = pieces(log([
      'test/cuda/next/flash_lean.test.ts > INSTILL_CUDA_NEXT=flash_lean > lean flash kernels against the verified ones and the CPU: [ 0, 13, 50 ]',
      'test/cuda/ops.test.ts > kernels: narrow > lora_linear forward and backward',
      'test/cuda/ops.test.ts > kernels: verified > rmsnorm',  // the default path: names no piece
    ], ['test/cuda/next/stored_ds.test.ts', 'test/cuda/lora_reference.test.ts']));
    expect(got).toEqual([
      'flash_lean: a failed test names it',
      'narrow: a failed test names it',
      'stored_ds: its tests (test/cuda/next/stored_ds.test.ts) did not finish',
      'wb_cache: its tests (test/cuda/lora_reference.test.ts) did not finish',
    ]);
  });
});
