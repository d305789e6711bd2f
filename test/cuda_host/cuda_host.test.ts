// The CUDA backend's host code on the CPU (scripts/cuda-host-check.sh, test/cuda_host/README.md): the .cu files
// that launch no kernel of their own, compiled by nvcc as they are and linked with a fake device, checked against
// the verified per-linear path and the math; and the model's CUDA policy on a fake 'cuda' backend (the LoRA ops'
// CUDA host code, the CPU's ops elsewhere) against its per-linear pass and the CPU model. Needs nvcc (no GPU): skipped with the reason where it is absent,
// except under CI=true, where the CUDA compile check (scripts/check-cuda.sh) has it too and its absence fails.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const nvcc = spawnSync('bash', ['-c', 'command -v nvcc || ls /usr/local/cuda/bin/nvcc'], { encoding: 'utf8' }).status === 0;
if (!nvcc) console.warn(`skipping test/cuda_host: no nvcc on PATH or in /usr/local/cuda/bin${process.env.CI === 'true' ? ' (CI=true: a failure)' : ''}`);

describe.skipIf(!nvcc && process.env.CI !== 'true')('CUDA host code on a fake device', () => {
  it('lora_group.cu against lora_linear.cu and the math; the model\'s CUDA policy (kept matrices, groups, bf16 activations) against the per-linear pass and the CPU', (ctx) => {
    expect(nvcc, 'nvcc is needed (CI=true)').toBe(true);
    expect(existsSync('scripts/cuda-host-check.sh')).toBe(true);
    const r = spawnSync('bash', ['scripts/cuda-host-check.sh'], { encoding: 'utf8', timeout: 300_000 });
    const out = `${r.stdout}${r.stderr}`;
    console.log(out.trim());
    // exit 3: build/ holds a CUDA build (a GPU machine's npm ci), which the check cannot link; CI builds for the CPU
    if (r.status === 3 && process.env.CI !== 'true') {
      ctx.skip();
      return;
    }
    expect(r.status, out.slice(-4000)).toBe(0);
    expect(out.match(/passed: 0 failure\(s\) in \d+ cases/g)?.length).toBe(3);
  }, 320_000);
});
