// Trainer on stories260K + a generated Q/A set: the loss falls, events arrive in order, grad
// accumulation normalises per token over the window, the adapter is PEFT-shaped.
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { engineBatch, type StepEvent, type EvalEvent } from '../../src/train/trainer.js';
import { readMetrics } from '../../src/train/metrics.js';
import { AdamW, clipGradNorm } from '../../src/train/optimizer.js';
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

describe.skipIf(!haveFixture('stories260K/model.safetensors'))('AdamW', () => {
  it("the trainer's AdamW (saveable moments) equals the engine's fused adamwStep bit for bit over 15 steps", async () => {
    const a = await setup({ r: 4 });
    const b = await setup({ r: 4 });
    const batch = engineBatch([...a.loaders.train.iterate({ epoch: 0, position: 0 }, 1)][0].batch);
    const opt = new AdamW();
    const params = a.model.adapterWeights();
    const h = { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
    for (let i = 0; i < 15; i++) {
      await a.model.lossAndGrads(batch, { returnGrads: false });
      await opt.update(params, a.model.adapterGrads(), h);
      a.model.setAdapterWeights(params);
      await b.model.lossAndGrads(batch, { returnGrads: false });
      b.model.adamwStep(h);
    }
    const wa = a.model.adapterWeights(), wb = b.model.adapterWeights();
    for (const k of Object.keys(wa)) expect(Buffer.from(wa[k].buffer).equals(Buffer.from(wb[k].buffer)), k).toBe(true);
    expect(wa['base_model.model.model.layers.1.mlp.up_proj.lora_B.weight'].some((x) => x !== 0)).toBe(true);
  });

  it('clipGradNorm: global L2 norm, scaled to maxNorm only above it', () => {
    const g = { a: Float32Array.from([3, 0]), b: Float32Array.from([0, 4]) };
    expect(clipGradNorm(g, 10)).toBe(5);
    expect([...g.a, ...g.b]).toEqual([3, 0, 0, 4]);
    expect(clipGradNorm(g, 1)).toBe(5);
    expect(g.a[0]).toBeCloseTo(0.6, 6);
    expect(g.b[1]).toBeCloseTo(0.8, 6);
  });
});
