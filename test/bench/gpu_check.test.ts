// The host side of bench/gpu-check.sh, checked here, where CI runs: a GPU is lent rarely and briefly, and a slip in
// these scripts costs that run. bench/gpu/pieces.py decides which INSTILL_CUDA_NEXT pieces the run leaves out of its
// step A/Bs (those whose tests failed or never finished; a piece that faults in an A/B it should have been left out
// of costs the A/B): that it knows the engine's pieces (it reads them from native/runtime/next.cpp; when that list's
// layout changed, it silently knew none), and what it leaves out of a vitest log. bench/gpu/table.py prints the
// run's closing table and the targets from results.jsonl.
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
  // summary false: a run its timeout killed (no closing summary; the failed tests only as "× title" under their file).
  let logs = 0;
  const log = (failed: string[], unfinished: string[], summary = true) => {
    const files = all.map((p) => (p === 'wb_cache' ? 'test/cuda/lora_reference.test.ts' : `test/cuda/next/${p}.test.ts`));
    const lines = [' \x1b[1mRUN\x1b[22m  v4.1.12 /repo', ''];
    for (const f of new Set([...files, 'test/cuda/ops.test.ts'])) {
      if (unfinished.includes(f)) continue;
      const bad = failed.filter((t) => t.startsWith(f));
      lines.push(bad.length ? ` \x1b[31m❯\x1b[39m ${f} (9 tests | ${bad.length} failed) 3021ms` : ` \x1b[32m✓\x1b[39m ${f} (9 tests) 2113ms`);
      for (const t of bad) lines.push(`     \x1b[31m×\x1b[39m ${t.split(' > ').pop()} 1210ms`);
    }
    if (summary) {
      lines.push('', '⎯⎯⎯⎯⎯⎯⎯ Failed Tests ⎯⎯⎯⎯⎯⎯⎯', '');
      for (const t of failed) lines.push(` \x1b[41mFAIL\x1b[49m  ${t}`, 'AssertionError: dq: 3 of 90 elements differ in bits', '');
    }
    const path = join(dir, `log-${++logs}.txt`);
    writeFileSync(path, lines.join('\n'));
    return path;
  };

  it('leaves out the pieces failed tests name, and those whose test file did not finish', () => {
    expect(pieces(log([], []))).toEqual([]);
    const got = pieces(log([
      'test/cuda/next/flash_lean.test.ts > INSTILL_CUDA_NEXT=flash_lean > lean flash kernels against the verified ones and the CPU: [ 0, 13, 50 ]',
      'test/cuda/ops.test.ts > kernels: residual > lora_linear forward and backward',
      'test/cuda/ops.test.ts > kernels: verified > rmsnorm',  // the default path: names no piece
    ], ['test/cuda/next/norm_pack.test.ts', 'test/cuda/lora_reference.test.ts']));
    expect(got).toEqual([
      'flash_lean: a failed test names it',
      'norm_pack: its tests (test/cuda/next/norm_pack.test.ts) did not finish',
      'residual: a failed test names it',
      'wb_cache: its tests (test/cuda/lora_reference.test.ts) did not finish',
    ]);
  });

  it('after a timeout (no summary): the failed tests from the lines under their files, and the pieces they name', () => {
    const failed = [
      'test/cuda/next/rope_qk.test.ts > INSTILL_CUDA_NEXT=rope_qk > rope on q and k in one pass',
      'test/cuda/lora_reference.test.ts > GPU model > a bf16 model keeping its [W | B] (INSTILL_CUDA_NEXT=wb_cache): the bits',
    ];
    const path = log(failed, ['test/cuda/next/flash_lean.test.ts'], false);
    expect(pieces('--failed', path)).toEqual([  // in the log's order (its files in kAll's order here)
      'test/cuda/lora_reference.test.ts > a bf16 model keeping its [W | B] (INSTILL_CUDA_NEXT=wb_cache): the bits',
      'test/cuda/next/rope_qk.test.ts > rope on q and k in one pass',
    ]);
    expect(pieces(path)).toEqual([
      'flash_lean: its tests (test/cuda/next/flash_lean.test.ts) did not finish',
      'rope_qk: a failed test names it',
      'wb_cache: a failed test names it',
    ]);
    // with the summary, its full names (describe included) instead
    expect(pieces('--failed', log(failed, []))).toEqual(failed);
  });

  it('table.py: the rows, the targets, the A/Bs against the default, and the pieces failed tests name', () => {
    const step = 'train step llama-3.2-1b seq2048 r16';
    const rows = [
      { bench: 'lora_linear fwd+bwd', impl: 'torch eager', ms: 2.0, min_ms: 1.9 },
      { bench: 'lora_linear fwd+bwd', impl: 'instill cuda (cuBLASLt)', ms: 1.0, min_ms: 0.9, device: 'NVIDIA H100 80GB HBM3' },
      { bench: 'linear CE fwd+bwd V=128256', impl: 'torch logits+cross_entropy', ms: 24, min_ms: 24, peak_mib: 14000 },
      { bench: 'linear CE fwd+bwd V=128256', impl: 'instill cuda (chunked, cuBLASLt)', ms: 12, min_ms: 12, peak_mib: 1000 },
      { bench: 'linear CE fwd+bwd V=128256', impl: 'instill cuda (chunked, cuBLASLt, next kernels)', ms: 11.4, min_ms: 11.4, peak_mib: 1250, variant: 'next kernels' },
      { bench: step, impl: 'transformers+peft sdpa', ms: 100, min_ms: 90, tokens_per_s: 20480, mfu: 0.11 },
      { bench: `train step op attention_backward`, impl: 'instill cuda x16', ms: 8.25, share: 0.17 },
      { bench: step, impl: 'instill cuda (f32 activations, bf16 weights)', ms: 46, min_ms: 45, tokens_per_s: 44522, mfu: 0.243, forward_only_ms: 18 },
      { bench: `train step op attention_backward`, impl: 'instill cuda, next kernels x16', ms: 4.25, share: 0.11, variant: 'next kernels' },
      { bench: step, impl: 'instill cuda (f32 activations, bf16 weights, next kernels)', ms: 36.8, min_ms: 36, tokens_per_s: 55652, mfu: 0.304, variant: 'next kernels' },
      { bench: 'op kernel chain behind 2 products (rmsnorm, swiglu, swiglu bwd; T 2048, C 2048) [default]', impl: 'instill cuda (cuBLASLt)', ms: 6.2, programmatic_launches: 0, us_saved_per_boundary: 0 },
      { bench: 'op kernel chain behind 2 products (rmsnorm, swiglu, swiglu bwd; T 2048, C 2048) [default,pdl]', impl: 'instill cuda (cuBLASLt)', ms: 6.02, programmatic_launches: 1200, pdl: 'on', boundaries: 120, us_saved_per_boundary: 1.5 },
    ];
    const res = join(dir, 'results.jsonl'), status = join(dir, 'status.txt');
    writeFileSync(res, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    writeFileSync(status, ['GPU tests (test/cuda, GEMMs through cuBLASLt): FAIL rc=1 - Tests 1 failed | 90 passed (91)',
      '  failed: test/cuda/next/norm_pack.test.ts > INSTILL_CUDA_NEXT=norm_pack > a bf16 model pass',
      '  why: AssertionError: dq: 3 of 90 elements differ in bits'].join('\n') + '\n');
    const p = spawnSync('python3', ['bench/gpu/table.py', res, status], { encoding: 'utf8' });
    expect(p.status, p.stderr).toBe(0);
    const out = p.stdout;
    expect(out).toContain('NVIDIA H100 80GB HBM3');
    expect(out).toContain('| train step op attention_backward | instill cuda x16 (17.0% of the step) | 8.25 |');
    expect(out).toContain('- fused LoRA linear vs torch eager: 2.00x (target >= 1.3x): MET');
    expect(out).toContain('- linear CE: peak memory 0.071 of torch (target <= 0.125), time 0.50x torch (target <= 1): MET');
    expect(out).toContain('- A/B linear CE fwd+bwd V=128256, next kernels: 11.40 ms against 12.00 ms by default (0.950x by medians, 0.950x by mins); peak 1250 MiB against 1000');
    expect(out).toContain('- training step: 2.17x transformers+peft tokens/s (medians; 2.00x by each side\'s fastest step) at 24.3% MFU');
    expect(out).toContain(`- A/B ${step}, next kernels: 36.80 ms against 46.00 ms by default (0.800x by medians, 0.800x by mins)`);
    expect(out).toContain('- ops, next kernels against the default (ms): attention_backward -4.00');
    expect(out).toContain('- failed GPU tests name these next pieces: norm_pack');
    expect(out).toContain('-   why: AssertionError: dq: 3 of 90 elements differ in bits');
    expect(out).toContain('- kernel chain (120 elementwise kernels behind 2 products): 6.200 ms, 6.020 with pdl (+1.50 us saved a kernel boundary; 1200 programmatic launches; pdl on)');
  });

  it('table.py judges the targets on the default rows only, and says which side of the step is missing', () => {
    const step = 'train step llama-3.2-1b seq2048 r16';
    const table = (rows: object[]) => {
      const res = join(dir, 'results2.jsonl'), status = join(dir, 'status2.txt');
      writeFileSync(res, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
      writeFileSync(status, '');
      const p = spawnSync('python3', ['bench/gpu/table.py', res, status], { encoding: 'utf8' });
      expect(p.status, p.stderr).toBe(0);
      return p.stdout;
    };
    const torch = { bench: step, impl: 'transformers+peft sdpa', ms: 100.5, min_ms: 90.5, tokens_per_s: 20378, mfu: 0.11 };
    const variant = { bench: step, impl: 'instill cuda (bf16 activations)', ms: 30.5, min_ms: 30.1, tokens_per_s: 67148, mfu: 0.4, variant: 'bf16 activations' };
    const dflt = { bench: step, impl: 'instill cuda (f32 activations, bf16 weights)', ms: 46.5, min_ms: 45.5, tokens_per_s: 44043, mfu: 0.24 };
    // only a variant of instill's step: not the target's row
    expect(table([torch, variant])).toContain('- training step: instill\'s default not measured (its bench failed or timed out); transformers+peft 20378 tok/s, 11.0% MFU');
    expect(table([dflt, variant])).toContain('- training step: transformers+peft not measured (its bench failed or timed out); instill 44043 tok/s at 24.0% MFU (target >= 45%), 46.50 ms');
    const both = table([torch, variant, dflt]);
    expect(both).toContain('- training step: 2.16x transformers+peft tokens/s');
    expect(both).toContain('at 24.0% MFU');
    expect(both).toContain(`- A/B ${step}, bf16 activations: 30.50 ms against 46.50 ms by default`);
    // the PIECE_AB chain: each set against the default, and a set that extends another against that one too
    const a = { bench: step, impl: 'instill cuda (default,lora_group)', ms: 40, min_ms: 39, variant: 'default,lora_group' };
    const b = { bench: step, impl: 'instill cuda (default,lora_group,swiglu_pack)', ms: 38, min_ms: 37, variant: 'default,lora_group,swiglu_pack' };
    const chain = table([torch, dflt, a, b]);
    expect(chain).toContain(`- A/B ${step}, default,lora_group: 40.00 ms against 46.50 ms by default`);
    expect(chain).toContain(`- A/B ${step}, default,lora_group,swiglu_pack: 38.00 ms against 46.50 ms by default`);
    expect(chain).toContain('  - swiglu_pack on top of default,lora_group: 38.00 ms against 40.00 ms (0.950x by medians)');
    expect(chain).not.toContain('lora_group on top of default');
    expect(chain).toContain('- to promote, by these A/Bs: lora_group, swiglu_pack (check them together: INSTILL_CUDA_NEXT=default,lora_group,swiglu_pack SKIP_BENCH=1');
  });

  it('a piece set for an A/B loses the pieces whose tests failed (gpu-check.sh --piece-set SET FAILED)', () => {
    const set = (s: string, failed: string) => {
      const p = spawnSync('bash', ['bench/gpu-check.sh', '--piece-set', s, failed], { encoding: 'utf8' });
      expect(p.status, p.stderr).toBe(0);
      return p.stdout.trim();
    };
    expect(set('attn_pack,dqkv_pack,pdl,ce_wide', '')).toBe('attn_pack,dqkv_pack,pdl,ce_wide');
    expect(set('attn_pack,dqkv_pack,pdl,ce_wide', 'ce_bf16,dqkv_pack')).toBe('attn_pack,pdl,ce_wide');
    expect(set('flash_wgmma', 'flash_wgmma,dq_wgmma')).toBe('');
    expect(set('dq_wgmma,dkv_wgmma', 'dq_wgmma_x')).toBe('dq_wgmma,dkv_wgmma');  // (whole names only)
  });

  it('table.py names what to promote: the passing pieces whose set made the step 1% faster (and each on top of the set it extends)', () => {
    const step = 'train step llama-3.2-1b seq2048 r16';
    const res = join(dir, 'results3.jsonl'), status = join(dir, 'status3.txt');
    const ab = (variant: string, ms: number, minMs: number) => ({ bench: step, impl: `instill cuda (${variant})`, ms, min_ms: minMs, variant });
    const write = (rows: object[], failed: string[]) => {
      writeFileSync(res, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
      writeFileSync(status, failed.map((t) => `  failed: ${t}`).join('\n') + '\n');
      const p = spawnSync('python3', ['bench/gpu/table.py', res, status], { encoding: 'utf8' });
      expect(p.status, p.stderr).toBe(0);
      return p.stdout;
    };
    const dflt = { bench: step, impl: 'instill cuda (bf16 activations, f32 residual, bf16 weights)', ms: 32, min_ms: 31.5, tokens_per_s: 64000, mfu: 0.35 };
    const rows = [
      dflt,
      ab('default,flash_lean', 30.5, 30.2),              // 4.7% faster: in
      ab('default,factor_pack', 31.8, 31.4),             // 0.6% faster: under the 1%
      ab('default,norm_pack', 30, 29.8),                 // faster, but a failed test names it
      ab('default,rope_qk', 31.5, 31.6),                 // 1.6% by medians, slower by mins
      ab('default,lora_group', 31.2, 30.9),              // 2.5% faster: in
      ab('default,lora_group,swiglu_pack', 31.3, 31.0),  // faster than the default, not on top of lora_group
    ];
    const out = write(rows, ['test/cuda/next/norm_pack.test.ts > INSTILL_CUDA_NEXT=norm_pack > a bf16 model pass']);
    expect(out).toContain('- to promote, by these A/Bs: flash_lean, lora_group (check them together: INSTILL_CUDA_NEXT=default,flash_lean,lora_group SKIP_BENCH=1 SKIP_WMMA=1 bash bench/gpu-check.sh)');
    expect(write([dflt, ab('default,factor_pack', 31.8, 31.4)], [])).toContain('- to promote, by these A/Bs: none');
    expect(write([dflt], [])).not.toContain('to promote');  // no piece A/B'd: nothing to say
  });
});
