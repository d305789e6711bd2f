// The wgmma pieces' primitive alone on a Hopper GPU: test/cuda/wgmma_probe.cu runs wgmma.cuh's products on each B
// layout the attention kernels give them (K-major K and Vᵀ tiles at D 64 and 128, and wgmma_mn's MN-major V tiles,
// without swizzle; and the 128-byte-swizzled tiles the kernels now use, wg_desc_sw128: K-major K tiles and MN-major
// V tiles at D 64 and 128, in a 1024-aligned image), with A from registers, on small integers, and compares with the
// exact product (the P·V layouts also onto an accumulator set and rescaled by ordinary code between two batches, as
// the kernels' O). The no-swizzle cases are the reference: if they pass and a swizzled one fails, the fault is the
// swizzle, not the descriptor. If the wgmma pieces' tests (test/cuda/next/*_wgmma.test.ts) fail and this passes, their
// fault is in the kernels' own logic; if this fails, its lines say which layout and which other reading of the same
// shared memory the GPU's result is (for a swizzled case also: without the swizzle, or swizzled from the slice's start).
// Built here with nvcc (bench/gpu-check.sh's machine has it). Skipped, saying so, without a 9.0 GPU.
import { describe, expect, it } from 'vitest';

import { buildWgmmaProbe, findNvcc, runWgmmaProbe } from '../helpers/wgmma_probe.js';
import { HOPPER, hasCuda } from './common.js';

if (hasCuda && !HOPPER) console.warn('skipping the wgmma probe: this GPU is not compute capability 9.0');

describe.skipIf(!HOPPER)('wgmma probe (the wgmma pieces\' products, descriptors and fragments)', () => {
  it('every B layout of the attention kernels: the exact product of small integers', () => {
    const nvcc = findNvcc();
    expect(nvcc, 'the probe is built with nvcc: none on this machine').not.toBeNull();
    const built = buildWgmmaProbe(nvcc!);
    if (built instanceof Error) throw built;
    const { status, out } = runWgmmaProbe(built);
    console.log(out);
    // the lines that say what differs, in the assertion (bench/gpu-check.sh's table quotes it)
    const wrong = out.split('\n').filter((l) => / WRONG |error|no Hopper/i.test(l)).join(' | ');
    expect(status, `wgmma probe: ${wrong || out.slice(-1500)}`).toBe(0);
    expect(out.match(/^case .*: ok \(64 x \d+ x \d+ exact\)$/gm)?.length ?? 0, out).toBe(16);
    expect(out).toContain('wgmma probe: 0 of 16 cases wrong');
  }, 200_000);
});
