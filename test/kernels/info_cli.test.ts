// `instill info`: the version, the addon loaded, the CPU and the GPU (or why none), as the runtime reports them, in
// text and as JSON; a GPU machine's run names the GPU and what runs its products.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';

import { run, type InfoReport } from '../../src/cli/info.js';
import { runtime } from '../../src/index.js';
import { addonPaths, packageRoot } from '../../src/native.js';

async function capture(argv: string[]): Promise<{ code: number; out: string }> {
  let out = '';
  const log = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => {
    out += a.join(' ') + '\n';
  });
  try {
    return { code: await run(argv), out };
  } finally {
    log.mockRestore();
  }
}

describe('instill info', () => {
  it('--json: the package version, the addon loaded, the CPU, and the GPU or why there is none', async () => {
    const { code, out } = await capture(['--json']);
    expect(code).toBe(0);
    const r = JSON.parse(out) as InfoReport;
    expect(r.version).toBe((JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version);
    expect(r.node).toContain(process.version);
    expect(addonPaths()).toContain(r.addon);  // (a local build here; prebuilds where there is none)
    const rt = runtime.info();
    expect(r.cpu).toMatchObject({ threads: rt.threads, isa: rt.isa, isas: rt.isas });
    if (rt.cuda) {
      expect(r.gpu).toMatchObject({ name: rt.cuda.name, computeCapability: rt.cuda.computeCapability, gemm: rt.cuda.gemm });
      expect(r.gpu!.pieces).toEqual(runtime.nextKernels());
      expect(r.gpuUnavailable).toBeNull();
    } else {
      expect(r.gpu).toBeNull();
      expect(r.gpuUnavailable!.length).toBeGreaterThan(10);
    }
  });

  it('text: the same, a line each', async () => {
    const { code, out } = await capture([]);
    expect(code).toBe(0);
    expect(out).toMatch(/^instill \d+\.\d+\.\d+, Node v\d+/);
    expect(out).toContain(`native addon: ${addonPaths()[0]}`);
    expect(out).toContain(`instruction set ${runtime.info().isa}`);
    const gpu = runtime.info().cuda;
    if (gpu) {
      expect(out).toContain(`GPU: ${gpu.name}, compute capability ${gpu.computeCapability}`);
      expect(out).toContain(`matrix products: ${gpu.gemm}`);
    } else {
      expect(out).toContain('GPU: none usable: ');
    }
  });

  it('--help prints the usage; an unknown option is E_ARG', async () => {
    expect((await capture(['--help'])).out).toContain('usage: instill info');
    await expect(capture(['--bogus'])).rejects.toMatchObject({ code: 'E_ARG' });
  });
});
