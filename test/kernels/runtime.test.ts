// The runtime's knobs (INSTILL_THREADS, INSTILL_ISA) and the addon in worker threads.
import { execFileSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';

import { Tensor, kernels, runtime } from '../../src/index.js';
import { addonPaths, packageRoot } from '../../src/native.js';

/** runtimeInfo() of a fresh process with the given environment. */
function infoWith(env: Record<string, string>): { threads: number; isa: string } {
  const script = `const a = require(${JSON.stringify(addonPaths()[0])}); console.log(JSON.stringify(a.runtimeInfo()))`;
  const out = execFileSync(process.execPath, ['-e', script], { env: { ...process.env, ...env }, cwd: packageRoot });
  return JSON.parse(out.toString()) as { threads: number; isa: string };
}

describe('runtime', () => {
  it('sizes the pool from INSTILL_THREADS', () => {
    expect(infoWith({ INSTILL_THREADS: '3' }).threads).toBe(3);
    expect(infoWith({ INSTILL_THREADS: '1' }).threads).toBe(1);
  });

  it('uses the ISA that INSTILL_ISA names, when the CPU runs it', () => {
    expect(infoWith({ INSTILL_ISA: 'portable' }).isa).toBe('portable');
    const best = runtime.info().isas.at(-1);
    expect(infoWith({ INSTILL_ISA: 'no-such-isa' }).isa).toBe(best);
  });

  it('reports features consistent with the ISAs it offers', () => {
    const info = runtime.info();
    expect(info.isas[0]).toBe('portable');
    expect(info.isas).toContain(info.isa);
    if (info.isas.includes('avx512')) expect(info.features.avx512f).toBe(true);
    if (info.isas.includes('avx2')) expect(info.features.avx2 && info.features.fma).toBe(true);
  });

  it('works in a worker thread and keeps working after the worker ends', async () => {
    const code = `
      const { parentPort } = require('node:worker_threads');
      const a = require(${JSON.stringify(addonPaths()[0])});
      a.init(class extends Error { constructor(code, m) { super(m); this.code = code; } });
      const x = a.tensorFromArray(new Float32Array([1, 2, 3, 4]), [2, 2], 'f32');
      const c = a.matmul(x, x, false, false);
      let code = null;
      try { a.matmul(x, a.tensorFromArray(new Float32Array(3), [3, 1], 'f32'), false, false); } catch (e) { code = e.code; }
      parentPort.postMessage({ c: Array.from(c.toArray()), code });`;
    const worker = new Worker(code, { eval: true });
    const msg = await new Promise<{ c: number[]; code: string }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await worker.terminate();
    expect(msg.c).toEqual([7, 10, 15, 22]);
    expect(msg.code).toBe('E_SHAPE');
    const x = Tensor.from([1, 2, 3, 4], [2, 2]);
    expect(Array.from(kernels.matmul({ a: x, b: x }).toArray())).toEqual([7, 10, 15, 22]);
  });
});
