// The runtime's knobs (INSTILL_THREADS, INSTILL_ISA) and the addon in worker threads.
import { execFileSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';

import { Tensor, kernels, runtime } from '../../src/index.js';
import { addonPaths, native, packageRoot } from '../../src/native.js';
import { handleOf } from '../../src/tensor.js';

/** runtimeInfo() of a fresh process with the given environment. */
function infoWith(env: Record<string, string>): { threads: number; isa: string; hostCache: { bytes: number; limit: number } } {
  const script = `const a = require(${JSON.stringify(addonPaths()[0])}); console.log(JSON.stringify(a.runtimeInfo()))`;
  const out = execFileSync(process.execPath, ['-e', script], { env: { ...process.env, ...env }, cwd: packageRoot });
  return JSON.parse(out.toString()) as { threads: number; isa: string; hostCache: { bytes: number; limit: number } };
}

describe('runtime', () => {
  it('info() describes the GPU only where one is usable (runtime.info().cuda), the CPU always', () => {
    const info = runtime.info();
    expect(info.devices[0]).toBe('cpu');
    if (!info.devices.includes('cuda')) {
      expect(info.cuda).toBeUndefined();
      return;
    }
    expect(info.cuda?.name.length).toBeGreaterThan(0);
    expect(info.cuda?.computeCapability).toMatch(/^\d+\.\d+$/);
    expect(info.cuda?.multiprocessors).toBeGreaterThan(0);
    expect(info.cuda?.memoryBytes).toBeGreaterThan(2 ** 30);
  });

  it('keeps freed host blocks of 1 MiB and more for reuse, up to its limit; releaseHostMemory frees them', () => {
    expect(infoWith({ INSTILL_HOST_CACHE_MB: '64' }).hostCache.limit).toBe(64 * 2 ** 20);
    expect(infoWith({ INSTILL_HOST_CACHE_MB: '0' }).hostCache.limit).toBe(0);
    runtime.releaseHostMemory();
    expect(runtime.info().hostCache.bytes).toBe(0);
    // linearCrossEntropy's chunk of logits (256 × 5000 f32, 5 MB) is allocated and freed inside the call
    const n = 256, c = 64, v = 5000;
    const h = Tensor.from(Float32Array.from({ length: n * c }, (_, i) => Math.sin(i)), [n, c]);
    const w = Tensor.from(Float32Array.from({ length: v * c }, (_, i) => Math.cos(i) * 0.1), [v, c]);
    const targets = Tensor.from(Int32Array.from({ length: n }, (_, i) => (i * 7) % v), [n]);
    const first = kernels.linearCrossEntropy({ h, w, targets });
    const held = runtime.info().hostCache.bytes;
    expect(held).toBeGreaterThan(0);
    expect(held).toBeLessThanOrEqual(runtime.info().hostCache.limit);
    // a reused block gives the same result (the kernels never read what they did not write)
    expect(kernels.linearCrossEntropy({ h, w, targets })).toEqual(first);
    expect(runtime.releaseHostMemory()).toBeGreaterThan(0);
    expect(runtime.info().hostCache.bytes).toBe(0);
  });

  it('deviceMemory and releaseDeviceMemory: the GPU only; E_DEVICE where none is usable, E_ARG for another device', () => {
    const gpu = runtime.info().devices.includes('cuda');
    for (const call of [() => runtime.deviceMemory('cuda'), () => runtime.releaseDeviceMemory('cuda')]) {
      if (gpu) expect(call).not.toThrow();
      else expect(call).toThrowError(expect.objectContaining({ code: 'E_DEVICE' }));
    }
    expect(() => runtime.releaseDeviceMemory('cpu' as 'cuda')).toThrowError(/Expected 'cuda' .*releaseHostMemory/);
    expect(() => runtime.deviceMemory('gpu' as 'cuda')).toThrowError(expect.objectContaining({ code: 'E_ARG' }));
    expect(() => runtime.deviceMemory('cuda', { resetPeak: 1 as unknown as boolean })).toThrowError(expect.objectContaining({ code: 'E_ARG' }));
  });

  it('native deviceLaunchCounts (for tests and benchmarks): counts on a GPU; E_DEVICE for the CPU and where no GPU is usable', () => {
    expect(() => native().deviceLaunchCounts('cpu')).toThrowError(expect.objectContaining({ code: 'E_DEVICE', message: expect.stringMatching(/CPU launches no kernels/) }));
    if (!runtime.info().devices.includes('cuda')) {
      expect(() => native().deviceLaunchCounts('cuda')).toThrowError(expect.objectContaining({ code: 'E_DEVICE' }));
      return;
    }
    const before = native().deviceLaunchCounts('cuda');
    const a = Tensor.from(Float32Array.from({ length: 64 }, (_, i) => i), [8, 8], { device: 'cuda' });
    kernels.matmul({ a, b: a }).dispose();  // (cuBLASLt's kernels are not counted; its fallback is one of ours)
    native().opSwiglu(handleOf(a), handleOf(a)).dispose();
    const after = native().deviceLaunchCounts('cuda');
    expect(after.launches).toBeGreaterThan(before.launches);
    expect(after.programmatic).toBeGreaterThanOrEqual(before.programmatic);
  });

  it('op profile: calls and host time per op while on, nothing while off; reading it starts it over', () => {
    const a = Tensor.from(Float32Array.from({ length: 96 * 80 }, (_, i) => Math.sin(i)), [96, 80]);
    const x = Tensor.from(Float32Array.from({ length: 33 * 80 }, (_, i) => Math.cos(i)), [33, 80]);
    const la = Tensor.from(new Float32Array(4 * 80).fill(0.01), [4, 80]), lb = Tensor.from(new Float32Array(96 * 4).fill(0.02), [96, 4]);
    runtime.setOpProfile(true);
    try {
      kernels.matmul({ a, b: a, transB: true });
      kernels.matmul({ a: x, b: a, transB: true });
      kernels.loraLinear({ x, w: a, a: la, b: lb, scale: 2 });
      const all = runtime.opProfile();
      // an op's parts are rows of their own, "op/part", inside the op's time
      const parts = all.filter((r) => r.op.includes('/'));
      expect(parts.map((r) => r.op).sort()).toEqual(['lora_linear_forward/u = x A^T', 'lora_linear_forward/y = [x | s u] [W | B]^T']);
      const rows = all.filter((r) => !r.op.includes('/'));
      expect(rows.map((r) => r.op).sort()).toEqual(['lora_linear_forward', 'matmul']);
      expect(rows.find((r) => r.op === 'matmul')).toMatchObject({ device: 'cpu', calls: 2 });
      const lora = rows.find((r) => r.op === 'lora_linear_forward')!;
      expect(lora).toMatchObject({ device: 'cpu', calls: 1 });
      for (const p of parts) expect(p.calls).toBe(1);
      expect(parts.reduce((s, p) => s + p.ms, 0)).toBeLessThanOrEqual(lora.ms);
      for (const r of rows) expect(r.ms).toBeGreaterThan(0);
      for (let i = 1; i < rows.length; i++) expect(rows[i].ms).toBeLessThanOrEqual(rows[i - 1].ms);
      const at = all.indexOf(lora);  // its parts follow it, largest first
      expect(all.slice(at + 1, at + 3)).toEqual([...parts].sort((p, q) => q.ms - p.ms));
      expect(runtime.opProfile()).toEqual([]);
    } finally {
      runtime.setOpProfile(false);
    }
    kernels.matmul({ a, b: a, transB: true });
    expect(runtime.opProfile()).toEqual([]);
    expect(() => runtime.setOpProfile('yes' as never)).toThrow(expect.objectContaining({ code: 'E_ARG' }));
  });

  it('INSTILL_CUDA_NEXT turns on what waits for a GPU run, by name: all, a list, -name leaves one out, none, default (the promoted), unknown is E_ARG', () => {
    const all = ['residual', 'wb_cache', 'flash_lean', 'lora_group', 'swiglu_pack', 'norm_pack', 'fewer_packs', 'rope_qk', 'factor_pack', 'ce_wide', 'attn_pack', 'dqkv_pack', 'ce_bf16', 'side_grads', 'flash_wgmma', 'dq_wgmma', 'dkv_wgmma', 'async_upload', 'pdl', 'delta_rows', 'rope_rows'];
    const saved = process.env.INSTILL_CUDA_NEXT;
    const withNext = (v: string | undefined) => {
      if (v === undefined) delete process.env.INSTILL_CUDA_NEXT;
      else process.env.INSTILL_CUDA_NEXT = v;
      return runtime.nextKernels();
    };
    try {
      // unset: the pieces a GPU run promoted (next.cpp's kAll), the same as `default`; `none`: no piece at all
      const promoted = withNext(undefined);
      expect(promoted.every((n) => all.includes(n))).toBe(true);
      expect(withNext('')).toEqual(promoted);
      expect(withNext('default')).toEqual(promoted);
      expect(withNext('none')).toEqual([]);
      expect(withNext('none,rope_qk')).toEqual(['rope_qk']);
      expect(withNext('rope_qk,none')).toEqual([]);  // left to right
      expect(withNext('default,-rope_qk')).toEqual(promoted.filter((n) => n !== 'rope_qk'));
      expect(withNext('default,-rope_qk,rope_qk')).toEqual(promoted);
      expect(() => withNext('-default')).toThrow(expect.objectContaining({ code: 'E_ARG' }));
      expect(() => withNext('-none')).toThrow(expect.objectContaining({ code: 'E_ARG' }));
      expect(withNext('1')).toEqual(all);
      expect(withNext('all')).toEqual(all);
      expect(withNext('rope_qk,residual')).toEqual(['residual', 'rope_qk']);  // in their fixed order
      expect(withNext('all,-rope_qk,-wb_cache')).toEqual(all.filter((n) => n !== 'rope_qk' && n !== 'wb_cache'));
      expect(withNext('rope_qk,,')).toEqual(['rope_qk']);
      // pieces taken out after GPU runs measured them (stop 22: pack_wb, flash_mt, flash_occ, stored_ds, attn_prep;
      // stop 23: split_k, ce_l2, dkv_pairs, dkv_whole, dq_atomic, dkv_atomic, rope_token; stop 24: group_wide,
      // bf16_beta; stop 36: norm_rows, optim_loads, ce_cluster)
      expect(() => withNext('default,ce_cluster')).toThrow(expect.objectContaining({ code: 'E_ARG', message: expect.stringContaining("'ce_cluster'") }));
      expect(() => withNext('flash_mt')).toThrow(expect.objectContaining({ code: 'E_ARG' }));
      expect(() => withNext('default,dq_atomic')).toThrow(expect.objectContaining({ code: 'E_ARG', message: expect.stringContaining("'dq_atomic'") }));
      expect(() => withNext('default,group_wide')).toThrow(expect.objectContaining({ code: 'E_ARG', message: expect.stringContaining("'group_wide'") }));
      expect(() => withNext('all,-bf16_beta')).toThrow(expect.objectContaining({ code: 'E_ARG', message: expect.stringContaining("'bf16_beta'") }));
      expect(() => withNext('pack_bw')).toThrow(expect.objectContaining({ code: 'E_ARG', message: expect.stringContaining("'pack_bw'") }));
      expect(() => withNext('pack_bw')).toThrow(expect.objectContaining({ code: 'E_ARG' }));  // again: a bad value is not kept
      expect(withNext('residual')).toEqual(['residual']);
    } finally {
      withNext(saved);
    }
  });

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
