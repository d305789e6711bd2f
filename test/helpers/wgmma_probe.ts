// Builds test/cuda/wgmma_probe.cu (the wgmma pieces' primitive alone: wgmma.cuh's products on each B layout the
// attention kernels use) with nvcc, for test/cuda_host/wgmma_probe.test.ts (its host arithmetic, in CI) and
// test/cuda/wgmma_probe.test.ts (the products on a Hopper GPU). sm_90a only: the probe's products need it.
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** nvcc's path (NVCC, then the PATH, then /usr/local/cuda/bin, as scripts/find-nvcc.sh), or null. */
export function findNvcc(): string | null {
  const r = spawnSync('bash', ['-c', 'source scripts/find-nvcc.sh && echo "$NVCC"'], { encoding: 'utf8' });
  const path = r.status === 0 ? r.stdout.trim() : '';
  return path || null;
}

/** The probe built into a fresh temporary folder: its path, or an Error saying why not (nvcc's own output).
 * strict: warnings are errors (CI's nvcc, as scripts/check-cuda.sh builds); off on a GPU machine, whose nvcc may
 * warn about other things, so that a warning there is not read as a failed probe. */
export function buildWgmmaProbe(nvcc: string, strict = false): string | Error {
  const out = join(mkdtempSync(join(tmpdir(), 'instill-wgmma-probe-')), 'wgmma_probe');
  const r = spawnSync(nvcc, ['-std=c++17', '-O2', '-Inative', '--expt-relaxed-constexpr', ...(strict ? ['-Werror', 'all-warnings'] : []),
    '-gencode=arch=compute_90a,code=sm_90a', 'test/cuda/wgmma_probe.cu', '-o', out], { encoding: 'utf8', timeout: 180_000 });
  if (r.status !== 0) return new Error(`nvcc test/cuda/wgmma_probe.cu failed (status ${r.status}): ${`${r.stdout}${r.stderr}`.slice(-3000)}`);
  return out;
}

/** Runs the built probe (args: none for the GPU, ['--host'] for its host arithmetic): its exit status and output. */
export function runWgmmaProbe(path: string, args: string[] = []): { status: number | null; out: string } {
  const r = spawnSync(path, args, { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}
