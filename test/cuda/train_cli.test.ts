// `instill train --device cuda --dtype bf16` in child processes, as a user runs it on a GPU box: the run
// finishes with a falling eval loss and a PEFT adapter that loads on the CPU; SIGINT + --resume reaches the
// uninterrupted run's adapter bit for bit by default (cuBLASLt's first-choice algorithms). With
// INSTILL_CUBLASLT_TUNE=on each process times its own choices (native/cuda/cublaslt.cu), so the resumed run
// drifts (7% in one factor, cuda run 13): it is only checked to go on from the right step and learn.
// Skips where no GPU is usable; skipped in gpu-check's WMMA pass (INSTILL_CUBLASLT=off) to save GPU time.
// dist/ must be built (bench/gpu-check.sh carries it; `npm run build:ts`).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { runtime } from '../../src/index.js';
import { loadModel } from '../../src/model/model.js';
import { native } from '../../src/native.js';
import { haveFixture } from '../helpers/fixtures.js';
import { adapterBytes, train } from '../train/helpers/child.js';
import { writeQaDataset } from '../train/helpers/qa.js';
import { MODEL_DIR, tmp } from '../train/helpers/setup.js';

const hasCuda = runtime.info().devices.includes('cuda');
if (!hasCuda) console.warn(`skipping test/cuda/train_cli: ${native().deviceUnavailableReason('cuda')}`);

/** The F32 tensors of a safetensors file, by name (read independently of the engine). */
function tensors(buf: Buffer): Map<string, Float32Array> {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const out = new Map<string, Float32Array>();
  for (const [k, v] of Object.entries(header)) {
    if (k === '__metadata__') continue;
    expect(v.dtype).toBe('F32');
    const bytes = buf.subarray(8 + n + v.data_offsets[0], 8 + n + v.data_offsets[1]);
    out.set(k, new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)));
  }
  return out;
}

describe.skipIf(!hasCuda || !haveFixture('stories260K/model.safetensors') || process.env.INSTILL_CUBLASLT === 'off')(
  'instill train --device cuda (child process)', () => {
    let common: string[];
    beforeAll(() => {
      const data = writeQaDataset(tmp('cuda-cli-qa'));
      common = ['--model', MODEL_DIR, '--data', data.train, '--eval-data', data.heldout, '--device', 'cuda', '--dtype', 'bf16',
        '--max-seq-len', '64', '--batch-size', '2', '--grad-accum', '2', '--epochs', '2', '--lr', '3e-3', '--warmup-steps', '3',
        '--lora-r', '4', '--lora-alpha', '8', '--target-modules', 'q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj',
        '--seed', '3', '--save-every', '10'];
    });

    it('runs to the end on the GPU: eval loss falls; the adapter is trained and loads on the CPU', async () => {
      const out = tmp('cuda-cli-straight');
      const r = await train([...common, '--output', out]);
      expect(r.code, r.stderr).toBe(0);
      const done = r.events.find((e) => e.event === 'done')!;
      expect(done.reason).toBe('completed');
      expect(done.evalLossLast as number).toBeLessThan((done.evalLossFirst as number) * 0.7);
      // the start event names the GPU and what ran its products
      const gpu = r.events.find((e) => e.event === 'start')!.gpu as { name: string; gemm: string };
      expect(gpu.name).toBe(runtime.info().cuda!.name);
      expect(gpu.gemm).toBe(runtime.info().cuda!.gemm);
      // and the done event the training's peak of GPU memory: the model's bf16 weights at least, less than the GPU has
      const peak = done.peakGpuBytes as number;
      expect(peak).toBeGreaterThan(500e3);
      expect(peak).toBeLessThan(runtime.info().cuda!.memoryBytes);
      const saved = tensors(adapterBytes(out));
      expect(saved.size).toBe(5 * 7 * 2);
      for (const [k, v] of saved) expect(v.every(Number.isFinite), k).toBe(true);
      const m = await loadModel(MODEL_DIR);
      m.loadAdapter(out);
      expect(m.adapterWeights()['base_model.model.model.layers.2.mlp.up_proj.lora_B.weight'].some((x) => x !== 0)).toBe(true);
      expect(existsSync(join(out, 'summary.json'))).toBe(true);
    });

    it.each([
      { tune: 'default', exact: true },
      { tune: 'on', exact: false },
    ])('SIGINT at a random step, then --resume on the GPU (cuBLASLt tuning $tune): the uninterrupted run', async ({ tune, exact }) => {
      const env = tune === 'on' ? { INSTILL_CUBLASLT_TUNE: 'on' } : {};
      const straight = tmp('cuda-cli-ref');
      const r0 = await train([...common, '--output', straight], undefined, env);
      expect(r0.code, r0.stderr).toBe(0);
      const out = tmp('cuda-cli-sigint');
      const k = 3 + Math.floor(Math.random() * 20);
      const r1 = await train([...common, '--output', out], (e) => (e.event === 'step' && (e.step as number) >= k ? 'SIGINT' : undefined), env);
      expect(r1.code, r1.stderr).toBe(130);
      const stopped = r1.events.find((e) => e.event === 'done')!.step as number;
      const r2 = await train([...common, '--output', out, '--resume'], undefined, env);
      expect(r2.code, r2.stderr).toBe(0);
      expect(r2.events.find((e) => e.event === 'step')!.step as number).toBe(stopped + 1);
      if (exact) {
        expect(adapterBytes(out).equals(adapterBytes(straight)), `stopped at ${stopped}`).toBe(true);
        return;
      }
      const first = r0.events.find((e) => e.event === 'done')!.evalLossFirst as number;
      const resumed = r2.events.find((e) => e.event === 'done')!;
      expect(resumed.reason).toBe('completed');
      expect(resumed.evalLossLast as number).toBeLessThan(first * 0.7);
      expect(tensors(adapterBytes(out)).size).toBe(tensors(adapterBytes(straight)).size);
    });
  });
