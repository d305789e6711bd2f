// test/cuda/wgmma_probe.cu's own arithmetic, without a GPU (its --host mode): each case's shared-memory image, read
// back through the case's layout and slice starts, gives the product the math wants, and each other reading the probe
// names when a GPU's result is wrong (LBO and SBO swapped, the other major, both; A's fragments a[1] and a[2] swapped;
// D's d[1] and d[2] swapped) gives another product, which the probe's report names. So on a GPU, a wrong line from the probe is the hardware's
// reading, not the probe's. Needs nvcc (no GPU): skipped with the reason where it is absent, except under CI=true,
// where its absence fails.
import { describe, expect, it } from 'vitest';

import { buildWgmmaProbe, findNvcc, runWgmmaProbe } from '../helpers/wgmma_probe.js';

const nvcc = findNvcc();
if (!nvcc) console.warn(`skipping the wgmma probe's host check: no nvcc${process.env.CI === 'true' ? ' (CI=true: a failure)' : ''}`);

describe.skipIf(!nvcc && process.env.CI !== 'true')('wgmma probe, its host arithmetic', () => {
  it('each case\'s image read through its layout is the product; every other reading is told apart and named', () => {
    expect(nvcc, 'nvcc is needed (CI=true)').not.toBeNull();
    const built = buildWgmmaProbe(nvcc!, true);
    if (built instanceof Error) throw built;
    const { status, out } = runWgmmaProbe(built, ['--host']);
    expect(status, out).toBe(0);
    expect(out.match(/^host: case .*: ok \(its reading is the product; 5 other readings named/gm)?.length, out).toBe(10);
    expect(out).toContain('wgmma probe (host): 0 of 10 cases wrong');
  }, 200_000);
});
