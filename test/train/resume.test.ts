// Stopped at step k (AbortSignal) and resumed: the same final adapter, bit for bit, as a run that never stopped.
import { readFileSync, readdirSync, mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { listCheckpoints, loadLatestCheckpoint } from '../../src/train/checkpoint.js';
import { readMetrics } from '../../src/train/metrics.js';
import { haveFixture } from '../helpers/fixtures.js';
import { setup, tmp, trainer } from './helpers/setup.js';

function tensors(path: string): Record<string, Float32Array> {
  const f = SafetensorsFile.open(path);
  try {
    return Object.fromEntries(f.names().map((n) => [n, f.readArray(n) as Float32Array]));
  } finally {
    f.close();
  }
}

describe.skipIf(!haveFixture('stories260K/model.safetensors'))('checkpoints and resume', () => {
  it('abort at step 7, resume to the end == a straight run (bit for bit), with grad accumulation and 2 epochs', async () => {
    const opts = { epochs: 2, gradAccum: 2, saveEvery: 5, keepLast: 2, evalEvery: 4, weightDecay: 0.01 };
    const a = await setup();
    const outA = tmp('straight');
    const ra = await trainer(a, { ...opts, outputDir: outA }).train();
    expect(ra.reason).toBe('completed');
    expect(ra.step).toBe(ra.totalSteps);
    expect(ra.totalSteps).toBeGreaterThan(20);

    const b = await setup();
    const outB = tmp('resumed');
    const ac = new AbortController();
    const t1 = trainer(b, { ...opts, outputDir: outB, signal: ac.signal });
    t1.on('step', (e) => e.step === 7 && ac.abort());
    const r1 = await t1.train();
    expect(r1.reason).toBe('aborted');
    expect(r1.step).toBe(7);
    expect((await listCheckpoints(outB)).map((c) => c.step)).toEqual([5, 7]);
    expect(existsSync(join(outB, 'adapter_model.safetensors'))).toBe(false); // only a completed run publishes

    const c = await setup(); // a fresh process would start like this: new model, new LoRA init, same seeds
    const steps: number[] = [];
    const t2 = trainer(c, { ...opts, outputDir: outB, resumeFrom: 'latest' });
    t2.on('step', (e) => steps.push(e.step));
    const r2 = await t2.train();
    expect(r2.reason).toBe('completed');
    expect(steps[0]).toBe(8);
    expect(r2.step).toBe(ra.step);

    const wa = tensors(join(outA, 'adapter_model.safetensors'));
    const wb = tensors(join(outB, 'adapter_model.safetensors'));
    expect(Object.keys(wb)).toEqual(Object.keys(wa));
    for (const k of Object.keys(wa)) expect(Buffer.from(wb[k].buffer).equals(Buffer.from(wa[k].buffer)), k).toBe(true);
    expect(readFileSync(join(outB, `checkpoint-${ra.step}`, 'optimizer.safetensors'))).toEqual(readFileSync(join(outA, `checkpoint-${ra.step}`, 'optimizer.safetensors')));
    // metrics.jsonl reads as one run: the same losses, step by step
    const la = readMetrics(join(outA, 'metrics.jsonl')).filter((m) => m.type === 'train').map((m) => [m.step, m.loss]);
    const lb = readMetrics(join(outB, 'metrics.jsonl')).filter((m) => m.type === 'train').map((m) => [m.step, m.loss]);
    expect(lb).toEqual(la);
    // keepLast 2
    expect((await listCheckpoints(outB)).length).toBe(2);
  });

  it('a half-written checkpoint folder is ignored; resuming with other settings is refused', async () => {
    const s = await setup();
    const out = tmp('half');
    await trainer(s, { maxSteps: 3, saveEvery: 2, outputDir: out }).train();
    // a crash mid-save of step 4 leaves a temporary folder, and a folder without trainer_state.json
    mkdirSync(join(out, 'checkpoint-4.tmp-999999'));
    writeFileSync(join(out, 'checkpoint-4.tmp-999999', 'adapter_model.safetensors'), 'partial');
    mkdirSync(join(out, 'checkpoint-5'));
    const latest = await loadLatestCheckpoint(out);
    expect(latest!.state.step).toBe(3);
    expect(readdirSync(out)).toContain('checkpoint-4.tmp-999999');
    const s2 = await setup();
    await expect(trainer(s2, { maxSteps: 3, lr: 1e-3, outputDir: out, resumeFrom: 'latest' }).train()).rejects.toThrow(/settings differ \(lr: checkpoint 0.003, now 0.001/);
    await expect(trainer(s2, { maxSteps: 3, outputDir: out }).train()).rejects.toThrow(/already holds checkpoints of another run/);
  });
});
