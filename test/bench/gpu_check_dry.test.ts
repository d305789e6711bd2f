// bench/gpu-check.sh from end to end without a GPU: every GPU step fails fast, and the script must still go
// through each of its steps in order, note each in status.txt and print its table and targets last. A GPU is
// lent rarely and for minutes; a script that breaks halfway (a typo in a step added since the last run, a
// missing file it reads) costs that whole run, so its flow is checked here, where CI runs.
//
// The script works on the tree it sits in (it replaces build/ with the carried binary), so it runs on a copy:
// the sources, dist/ and node_modules (a link), with this machine's CPU build as the carried .gpu/instill.node
// (marked as built from the copy's sources) and the fixtures linked into .fixtures as the GPU machine has them.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

import { fixturePath, haveFixture } from '../helpers/fixtures.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const binary = join(root, 'build', 'Release', 'instill.node');

describe.skipIf(!haveFixture('stories260K') || !haveFixture('configs'))('bench/gpu-check.sh without a GPU', () => {
  const dir = mkdtempSync(join(tmpdir(), 'instill-gpu-check-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('goes through every step, notes each, and prints the table and the targets last', () => {
    expect(existsSync(binary), `${binary}: the CPU build (npm ci builds it)`).toBe(true);
    expect(existsSync(join(root, 'dist', 'src', 'index.js')), 'dist/ (npm ci compiles it)').toBe(true);
    const tree = join(dir, 'repo');
    mkdirSync(tree);
    for (const p of ['package.json', 'tsconfig.json', 'vitest.config.ts', 'CMakeLists.txt', 'bindings', 'native', 'src', 'test', 'bench', 'scripts', 'dist']) {
      cpSync(join(root, p), join(tree, p), { recursive: true });
    }
    symlinkSync(join(root, 'node_modules'), join(tree, 'node_modules'));
    mkdirSync(join(tree, '.fixtures'));
    for (const f of ['stories260K', 'configs']) symlinkSync(fixturePath(f), join(tree, '.fixtures', f));
    mkdirSync(join(tree, '.gpu'));
    cpSync(binary, join(tree, '.gpu', 'instill.node'));
    const hash = spawnSync('bash', ['bench/gpu-check.sh', '--source-hash'], { cwd: tree, encoding: 'utf8' });
    expect(hash.status, hash.stderr).toBe(0);
    writeFileSync(join(tree, '.gpu', 'instill.node.src'), hash.stdout);

    const out = join(dir, 'out');
    // a stand-in compute-sanitizer (SANITIZE=1 runs its step with no piece failed): 500 lines, an error summary, exit 9
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'compute-sanitizer'), '#!/bin/sh\nseq 500\necho "========= ERROR SUMMARY: 2 errors"\nexit 9\n', { mode: 0o755 });
    const env: NodeJS.ProcessEnv = {  // every step, the opt-in ones too
      ...process.env, OUT: out, DEADLINE_S: '170', EXTRA_AB: '1', SANITIZE: '1', NCU_SETS: 'attention lean', PATH: `${bin}:${process.env.PATH}`,
    };
    delete env.CI;  // the GPU machine's runs are not CI's (test/helpers/fixtures.ts)
    delete env.INSTILL_FIXTURES;
    const run = spawnSync('bash', ['bench/gpu-check.sh'], { cwd: tree, env, encoding: 'utf8', timeout: 200_000 });
    expect(run.status, `${run.stdout.slice(-2000)}\n${run.stderr.slice(-2000)}`).toBe(0);

    const status = readFileSync(join(out, 'status.txt'), 'utf8');
    // the carried binary, the tests (nothing ran: no GPU), each benchmark step failing fast, the tuned step's table
    expect(status).toMatch(/build with CUDA: carried \.gpu\/instill\.node/);
    expect(status).toMatch(/GPU tests \(test\/cuda, GEMMs through cuBLASLt\): NOTHING RAN/);
    for (const step of ['torch train step', 'instill train step', 'instill train step (f32 activations)',
      'instill train step, batch 8', 'instill lora', 'instill ce', 'instill ops']) {
      expect(status, step).toContain(`bench ${step}: FAILED`);
    }
    // each waiting piece's own A/B (gpu-check's PIECE_AB default), then the next-kernel A/Bs where a piece waits
    // (NEXT_SET names one); where none waits that is noted and no step runs under them
    for (const piece of ['delta_rows', 'rope_rows']) expect(status).toContain(`bench instill train step (default,${piece}): FAILED`);
    if (status.includes('no piece waits (NEXT_SET=default)')) {
      expect(status).not.toMatch(/\(next kernels|next kernels in the A\/Bs/);
    } else {
      for (const step of ['instill train step (next kernels)', 'instill ops (next kernels)']) expect(status, step).toContain(`bench ${step}: FAILED`);
    }
    expect(status).toContain('bench instill train step (cuBLASLt tuned): FAILED');
    expect(status).toMatch(/cuBLASLt tuning \(tuned\.md\): no tuned keys/);
    for (const tool of ['memcheck', 'racecheck', 'synccheck']) {
      expect(status).toContain(`compute-sanitizer ${tool} (INSTILL_CUDA_NEXT=default,flash_wgmma,dq_wgmma,dkv_wgmma): errors found (rc=9) - ========= ERROR SUMMARY: 2 errors`);
    }
    expect(status).toMatch(/ncu: no ncu on the PATH|ncu of the attention kernels: FAILED/);
    if (!status.includes('ncu: no ncu on the PATH')) expect(status).toMatch(/ncu of the lean kernels: FAILED/);
    expect(status).toMatch(/GPU tests \(test\/cuda, GEMMs through the WMMA kernel, f32 attention kernels\): NOTHING RAN/);
    expect(status).toMatch(/CLI instill bench train --device cuda: FAILED/);
    expect(status).not.toMatch(/skipped \(DEADLINE_S reached/);  // every step had its turn
    // the table and the targets last, as the device tool returns the end of the output
    const table = readFileSync(join(out, 'table.md'), 'utf8');
    // the device tool brings back at most 8 files: the logs in one archive beside results, status and table
    expect(readdirSync(out).sort()).toEqual(['logs.tar.gz', 'results.jsonl', 'status.txt', 'table.md']);
    const listed = spawnSync('tar', ['-tzf', join(out, 'logs.tar.gz')], { encoding: 'utf8' }).stdout.split('\n');
    expect(listed).toEqual(expect.arrayContaining(['tests-cublaslt.log', 'bench.log', 'gpu.txt', 'sanitize-memcheck.log']));
    // a sanitizer's log: its first 400 lines, then its last ones (the summary)
    const log = spawnSync('tar', ['-xzOf', join(out, 'logs.tar.gz'), 'sanitize-memcheck.log'], { encoding: 'utf8' }).stdout;
    expect(log.split('\n').slice(398, 401)).toEqual(['399', '400', '[... 501 lines in all; the last 5:]']);
    expect(log.trimEnd().endsWith('========= ERROR SUMMARY: 2 errors')).toBe(true);
    expect(table).toMatch(/\| bench \| impl \| median ms/);
    expect(run.stdout.trimEnd().split('\n').slice(-4).join('\n')).toMatch(/training step: not measured/);
  }, 240_000);
});
