// test/cuda/wgmma_probe.cu's own arithmetic, without a GPU (its --host mode): each case's shared-memory image, read
// back through the case's layout and slice starts, gives the product the math wants (the 128-byte-swizzled cases'
// images also being the kernels' swizzled tiles, chunk c of row r at chunk c ^ r % 8), and each other reading the
// probe names when a GPU's result is wrong (LBO and SBO swapped, the other major, both; for the swizzled cases also
// without the swizzle, and, K-major only, the swizzle taken from the slice's start rather than the address; A's
// fragments a[1] and a[2] swapped; D's d[1] and d[2] swapped) gives another product, which the probe's report names.
// The swizzle-from-the-start reading is left out of the MN-major swizzled cases because there it reads the same
// bytes as their own (slices start at multiples of 1024), so they name one reading fewer. So on a GPU, a wrong line
// from the probe is the hardware's reading, not the probe's. Needs nvcc (no GPU): skipped with the reason where it is
// absent, except under CI=true, where its absence fails.
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
    // every case ok, each naming its readings: 3 of the descriptor and 2 of the fragments; the swizzled ones also
    // without the swizzle, and the K-major swizzled ones the swizzle from the slice's start
    const named = (re: RegExp) => out.match(re)?.length ?? 0;
    expect(named(/^host: case .*: ok \(its reading is the product; \d+ other readings named/gm), out).toBe(16);
    expect(named(/^host: case (?!.*128B swizzle).*: ok \(its reading is the product; 5 other readings named/gm), out).toBe(10);
    expect(named(/^host: case .*K-major, 128B swizzle.*: ok \(its reading is the product; 7 other readings named/gm), out).toBe(2);
    expect(named(/^host: case .*MN-major, 128B swizzle.*: ok \(its reading is the product; 6 other readings named/gm), out).toBe(4);
    expect(out).toContain('wgmma probe (host): 0 of 16 cases wrong');
  }, 200_000);
});
