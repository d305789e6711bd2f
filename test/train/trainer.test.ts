// Trainer on stories260K + a generated Q/A set: the loss falls, events arrive in order, grad
// accumulation normalises per token over the window, the adapter is PEFT-shaped.
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCode, InstillError } from '../../src/errors.js';
import { engineBatch, type StepEvent, type EvalEvent } from '../../src/train/trainer.js';
import { readMetrics } from '../../src/train/metrics.js';
import { attentionFlops, loraStepFlops } from '../../src/model/flops.js';
import { ReferenceAdamW, clipGradNorm } from './helpers/reference_optimizer.js';
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

  it('each step\'s model FLOPs: its micro-batches\' examples, each token\'s weights and its attention within its own example', async () => {
    const s = await setup();
    const out = tmp('flops');
    const real = s.model.lossAndGrads.bind(s.model);
    const seen: Int32Array[] = [];  // each micro-batch's segment ids (B·T, 0 on padding)
    s.model.lossAndGrads = async (...args: Parameters<typeof real>) => {
      seen.push(Int32Array.from(args[0].segmentIds as Int32Array));
      return real(...args);
    };
    const t = trainer(s, { maxSteps: 3, gradAccum: 2, outputDir: out });
    const steps: StepEvent[] = [];
    t.on('step', (e) => steps.push(e));
    await t.train();
    const lora = s.model.loraConfig!;
    const per = loraStepFlops(s.model.spec, { rank: lora.r, targets: lora.targetModules }, 1);
    const weightsPerToken = 4 * per.frozenParams + 6 * per.loraParams;
    for (let k = 0; k < 3; k++) {
      let want = 0;
      for (const ids of seen.slice(2 * k, 2 * k + 2)) {
        // the examples: runs of one non-zero segment id
        for (let i = 0; i < ids.length;) {
          let j = i;
          while (j < ids.length && ids[j] === ids[i]) j++;
          if (ids[i] !== 0) want += (j - i) * weightsPerToken + attentionFlops(s.model.spec, j - i);
          i = j;
        }
      }
      expect(steps[k].flops / want - 1).toBeCloseTo(0, 12);
      expect(steps[k].flops / steps[k].flopsPerSec).toBeCloseTo(steps[k].tokens / steps[k].tokensPerSec, 9);  // one step time
    }
    const ms = readMetrics(join(out, 'metrics.jsonl')).filter((m) => m.type === 'train');
    expect(ms.map((m) => (m.type === 'train' ? m.model_tflops : 0))).toEqual(steps.map((e) => e.flopsPerSec / 1e12));
  });

  it('the next step\'s batches are assembled while the current step\'s last lossAndGrads runs, not between the steps', async () => {
    const s = await setup();
    const log: string[] = [];  // 'pull' (a batch assembled), 'start' / 'end' (a lossAndGrads)
    const iterate = s.loaders.train.iterate.bind(s.loaders.train);
    s.loaders.train.iterate = (...a: Parameters<typeof iterate>) => {
      const it = iterate(...a);
      return { next: () => { log.push('pull'); return it.next(); }, [Symbol.iterator]() { return this; } } as ReturnType<typeof iterate>;
    };
    const real = s.model.lossAndGrads.bind(s.model);
    s.model.lossAndGrads = async (...args: Parameters<typeof real>) => {
      log.push('start');
      const r = await real(...args);
      log.push('end');
      return r;
    };
    const steps: StepEvent[] = [];
    const t = trainer(s, { maxSteps: 4, gradAccum: 2 });
    t.on('step', (e) => steps.push(e));
    await t.train();
    expect(steps.map((e) => e.step)).toEqual([1, 2, 3, 4]);
    // step 1 pulls its two batches first; each step's second lossAndGrads has the next step's two pulled while it
    // runs (none after the last step's)
    const step = ['start', 'end', 'start', 'pull', 'pull', 'end'];
    expect(log).toEqual(['pull', 'pull', ...step, ...step, ...step, 'start', 'end', 'start', 'end']);
  });

  it('a loss that is not finite stops the run with E_RANGE, the finished steps\' metrics on disk', async () => {
    const s = await setup();
    const out = tmp('nan');
    const real = s.model.lossAndGrads.bind(s.model);
    let calls = 0;
    s.model.lossAndGrads = async (...args: Parameters<typeof real>) => {
      const r = await real(...args);
      return ++calls === 5 ? { ...r, loss: NaN } : r;
    };
    const t = trainer(s, { maxSteps: 10, outputDir: out, saveEvery: 0 });
    const err = await t.train().then(() => null, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_RANGE', message: expect.stringContaining('step 5: the loss (NaN)') });
    expect(readMetrics(join(out, 'metrics.jsonl')).filter((m) => m.type === 'train').map((m) => m.step)).toEqual([1, 2, 3, 4]);
  });

  it('a step whose forward or backward fails (say, out of GPU memory) saves the run up to the last finished step, to resume from', async () => {
    const s = await setup();
    const out = tmp('fail');
    const real = s.model.lossAndGrads.bind(s.model);
    let calls = 0;
    s.model.lossAndGrads = async (...args: Parameters<typeof real>) => {
      if (++calls === 7) throw new InstillError(ErrorCode.ALLOC, 'cannot allocate 1234 bytes on the GPU (a test)');
      return real(...args);
    };
    const steps: number[] = [];
    const t = trainer(s, { maxSteps: 10, outputDir: out });
    t.on('step', (e) => steps.push(e.step));
    const err = await t.train().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(InstillError);
    expect((err as InstillError).code).toBe('E_ALLOC');  // the cause's code, for the CLI's hint
    expect((err as InstillError).message).toContain('cannot allocate 1234 bytes');
    expect((err as InstillError).message).toContain(`the run up to step 6 is saved in ${join(out, 'checkpoint-6')}`);
    expect(steps).toEqual([1, 2, 3, 4, 5, 6]);
    const state = JSON.parse(readFileSync(join(out, 'checkpoint-6', 'trainer_state.json'), 'utf8')) as { step: number };
    expect(state.step).toBe(6);
    // the finished steps' metrics were on disk when the error came out (they are written in the background)
    expect(readMetrics(join(out, 'metrics.jsonl')).filter((m) => m.type === 'train').map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6]);
    // resumed (the cause gone), the run goes on from step 7 to its end
    s.model.lossAndGrads = real;
    const again: number[] = [];
    const t2 = trainer(s, { maxSteps: 10, outputDir: out, resumeFrom: 'latest' });
    t2.on('step', (e) => again.push(e.step));
    const r = await t2.train();
    expect(r.reason).toBe('completed');
    expect(again).toEqual([7, 8, 9, 10]);
    // a failure in the very first step has nothing to save: the error as it was
    const s0 = await setup();
    s0.model.lossAndGrads = async () => { throw new InstillError(ErrorCode.ALLOC, 'no memory at all'); };
    const out0 = tmp('fail0');
    const err0 = await trainer(s0, { maxSteps: 3, outputDir: out0 }).train().then(() => null, (e: unknown) => e);
    expect((err0 as InstillError).message).toBe('no memory at all');
    expect(existsSync(join(out0, 'checkpoint-0'))).toBe(false);
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

describe.skipIf(!haveFixture('stories260K/model.safetensors'))("the engine's optimizer (model.optimizerStep)", () => {
  const h = { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

  /** The reference next to the engine over 15 steps on one batch; returns both models' adapters and norms. */
  async function sideBySide(maxGradNorm: number) {
    const a = await setup({ r: 4 });
    const b = await setup({ r: 4 });
    const batch = engineBatch([...a.loaders.train.iterate({ epoch: 0, position: 0 }, 1)][0].batch);
    const ref = new ReferenceAdamW();
    const params = a.model.adapterWeights();
    const norms: [number, number][] = [];
    for (let i = 0; i < 15; i++) {
      await a.model.lossAndGrads(batch, { returnGrads: false });
      const grads = a.model.adapterGrads();
      const refNorm = clipGradNorm(grads, maxGradNorm);
      ref.update(params, grads, h);
      a.model.setAdapterWeights(params);
      await b.model.lossAndGrads(batch, { returnGrads: false });
      norms.push([refNorm, (await b.model.optimizerStep({ ...h, maxGradNorm })).gradNorm]);
    }
    return { wa: a.model.adapterWeights(), wb: b.model.adapterWeights(), norms, ref, engine: b.model };
  }

  it('without clipping: AdamW equals the reference bit for bit over 15 steps, moments included', async () => {
    const { wa, wb, norms, ref, engine } = await sideBySide(0);
    for (const k of Object.keys(wa)) expect(Buffer.from(wa[k].buffer).equals(Buffer.from(wb[k].buffer)), k).toBe(true);
    expect(wa['base_model.model.model.layers.1.mlp.up_proj.lora_B.weight'].some((x) => x !== 0)).toBe(true);
    for (const [r, e] of norms) expect(Math.abs(e - r) / r).toBeLessThan(1e-12);
    const state = engine.optimizerState();
    expect(state.step).toBe(15);
    for (const [name, m] of ref.m) {
      expect(state.m[name], name).toEqual(m);
      expect(state.v[name], name).toEqual(ref.v.get(name));
    }
  });

  it('with clipping: the same norms, and weights within rounding of the reference', async () => {
    const { wa, wb, norms } = await sideBySide(0.05);
    expect(norms.filter(([r]) => r > 0.05).length).toBeGreaterThan(5); // clipping did happen
    for (const [r, e] of norms) expect(Math.abs(e - r) / r).toBeLessThan(1e-9);
    let num = 0, den = 0;
    for (const k of Object.keys(wa)) {
      for (let i = 0; i < wa[k].length; i++) {
        num += (wa[k][i] - wb[k][i]) ** 2;
        den += wa[k][i] ** 2;
      }
    }
    expect(Math.sqrt(num / den)).toBeLessThan(1e-6);
  });

  it('optimizerState / setOptimizerState carry a run on: the next step is the same bits', async () => {
    const a = await setup({ r: 4 });
    const b = await setup({ r: 4 });
    const batches = [...a.loaders.train.iterate({ epoch: 0, position: 0 }, 1)].slice(0, 4).map((x) => engineBatch(x.batch));
    for (const batch of batches.slice(0, 3)) {
      await a.model.lossAndGrads(batch, { returnGrads: false });
      await a.model.optimizerStep({ ...h, maxGradNorm: 1 });
    }
    b.model.setAdapterWeights(a.model.adapterWeights());
    b.model.setOptimizerState(a.model.optimizerState());
    for (const m of [a.model, b.model]) {
      await m.lossAndGrads(batches[3], { returnGrads: false });
      await m.optimizerStep({ ...h, maxGradNorm: 1 });
    }
    const wa = a.model.adapterWeights(), wb = b.model.adapterWeights();
    for (const k of Object.keys(wa)) expect(wb[k], k).toEqual(wa[k]);
    expect(b.model.optimizerState().step).toBe(4);
    // step 0 resets the moments: the next step is a first step again
    b.model.setOptimizerState({ step: 0, m: {}, v: {} });
    expect(b.model.optimizerState()).toEqual({ step: 0, m: {}, v: {} });
  });

  it('refuses a state of another configuration, and a non-finite gradient updates nothing', async () => {
    const a = await setup({ r: 4 });
    const state = { step: 3, m: {}, v: {} };
    expect(() => a.model.setOptimizerState(state)).toThrow(expect.objectContaining({ code: 'E_DATA' }));
    const name = 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight';
    const before = a.model.adapterWeights();
    const grads = a.model.adapterGrads();
    const m = Object.fromEntries(Object.entries(grads).map(([k, g]) => [k, new Float32Array(g.length)]));
    expect(() => a.model.setOptimizerState({ step: 2, m, v: { ...m, [name]: new Float32Array(3) } })).toThrow(/256 \(m\) and 3 \(v\) values/);
    expect(() => a.model.setOptimizerState({ step: 1.5, m, v: m })).toThrow(expect.objectContaining({ code: 'E_DATA' }));
    expect(() => a.model.adamwStep({ ...h, maxGradNorm: -1 })).toThrow(/maxGradNorm/);
    expect(before).toEqual(a.model.adapterWeights());

    // Full mode: a NaN in one gradient gives a NaN norm and no update.
    const { randomModel } = await import('../../src/index.js');
    const cfg = { model_type: 'llama', vocab_size: 64, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, tie_word_embeddings: true };
    const full = randomModel(cfg, { seed: 3, full: true });
    await full.lossAndGrads({ inputIds: [[1, 2, 3, 4]], labels: [[-100, 2, 3, 4]] });
    const g = full.grads()['model.norm.weight'];
    g[5] = NaN;
    full.setGrads({ 'model.norm.weight': g }, { strict: false });
    const w0 = full.weights();
    expect(full.adamwStep({ lr: 1e-2, maxGradNorm: 1 })).toBeNaN();
    expect(full.weights()).toEqual(w0);
    expect(full.optimizerState().step).toBe(0);
  });
});
