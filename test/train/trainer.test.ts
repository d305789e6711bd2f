// Trainer on stories260K + a generated Q/A set: the loss falls, events arrive in order, grad
// accumulation normalises per token over the window, the adapter is PEFT-shaped.
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { engineBatch, type StepEvent, type EvalEvent } from '../../src/train/trainer.js';
import { readMetrics } from '../../src/train/metrics.js';
import { haveFixture } from '../helpers/fixtures.js';
import { setup, tmp, trainer } from './helpers/setup.js';

describe.skipIf(!haveFixture('stories260K/model.safetensors'))('Trainer', () => {
  it('loss and validation loss fall over 40 steps; events, metrics.jsonl, loss.svg, final adapter', async () => {
    const s = await setup();
    const out = tmp('out');
    const t = trainer(s, { maxSteps: 40, gradAccum: 2, evalEvery: 10, saveEvery: 20, outputDir: out });
    const steps: StepEvent[] = [];
    const evals: EvalEvent[] = [];
    const cks: number[] = [];
    t.on('step', (e) => steps.push(e));
    t.on('eval', (e) => evals.push(e));
    t.on('checkpoint', (e) => cks.push(e.step));
    const t0 = Date.now();
    const r = await t.train();
    console.log(`40 steps in ${Date.now() - t0} ms; loss ${steps[0].loss.toFixed(3)} -> ${steps.at(-1)!.loss.toFixed(3)}; eval ${evals.map((e) => e.loss.toFixed(3)).join(' ')}`);
    expect(r.reason).toBe('completed');
    expect(steps.map((e) => e.step)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    expect(evals.map((e) => e.step)).toEqual([0, 10, 20, 30, 40]);
    expect(cks).toEqual([20, 40]);
    const first5 = steps.slice(0, 5).reduce((a, e) => a + e.loss, 0) / 5;
    const last5 = steps.slice(-5).reduce((a, e) => a + e.loss, 0) / 5;
    expect(last5).toBeLessThan(first5 * 0.6);
    expect(evals.at(-1)!.loss).toBeLessThan(evals[0].loss * 0.6);
    expect(r.initialEvalLoss).toBe(evals[0].loss);
    // schedule: warmup 2 then cosine to 0
    expect(steps[0].lr).toBeCloseTo(1.5e-3, 12);
    expect(steps[1].lr).toBeCloseTo(3e-3, 12);
    expect(steps.at(-1)!.lr).toBeLessThan(1e-5);
    for (const e of steps) expect(e.gradNorm).toBeGreaterThan(0);
    const ms = readMetrics(join(out, 'metrics.jsonl'));
    expect(ms.filter((m) => m.type === 'train')).toHaveLength(40);
    expect(ms.filter((m) => m.type === 'eval')).toHaveLength(5);
    expect(readFileSync(join(out, 'loss.svg'), 'utf8')).toMatch(/^<svg[\s\S]*validation[\s\S]*<\/svg>\n$/);
    for (const f of ['adapter_model.safetensors', 'adapter_config.json']) expect(existsSync(join(out, f))).toBe(true);
    expect(readFileSync(join(out, 'adapter_model.safetensors'))).toEqual(readFileSync(join(out, 'checkpoint-40', 'adapter_model.safetensors')));
  });

  it('gradient accumulation: a step over 2 micro-batches equals the per-token mean of both', async () => {
    const s = await setup({ batchSize: 1 });
    const all = [...s.loaders.train.iterate({ epoch: 0, position: 0 }, 1)].map((b) => b.batch);
    const other = all.find((b) => b.numTargets !== all[0].numTargets)!;
    const batches = [all[0], other];
    expect(batches[0].numTargets).not.toBe(batches[1].numTargets);
    const N = batches[0].numTargets + batches[1].numTargets;
    const a = await s.model.lossAndGrads(engineBatch(batches[0]), { normalizer: N });
    const b = await s.model.lossAndGrads(engineBatch(batches[1]), { normalizer: N, accumulate: true });
    const gAcc = s.model.adapterGrads();
    const la = await s.model.lossAndGrads(engineBatch(batches[0]));
    const ga = s.model.adapterGrads();
    const lb = await s.model.lossAndGrads(engineBatch(batches[1]));
    const gb = s.model.adapterGrads();
    const wa = batches[0].numTargets / N, wb = batches[1].numTargets / N;
    expect(a.loss + b.loss).toBeCloseTo(la.loss * wa + lb.loss * wb, 5);
    let maxDiff = 0, maxAbs = 0;
    for (const k of Object.keys(gAcc)) {
      for (let i = 0; i < gAcc[k].length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(gAcc[k][i] - (ga[k][i] * wa + gb[k][i] * wb)));
        maxAbs = Math.max(maxAbs, Math.abs(gAcc[k][i]));
      }
    }
    expect(maxAbs).toBeGreaterThan(0);
    expect(maxDiff).toBeLessThan(1e-5 * maxAbs + 1e-7);
  });
});
