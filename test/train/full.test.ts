// Full fine-tuning through the Trainer (every weight trainable, checkpoints hold the whole model in HF
// layout), resume bit-identical in full mode and with LoRA dropout, and forward-only evaluation.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../../src/model/model.js';
import { listCheckpoints } from '../../src/train/checkpoint.js';
import { dropoutSeedOf } from '../../src/train/trainer.js';
import { haveFixture } from '../helpers/fixtures.js';
import { setup, tmp, trainer } from './helpers/setup.js';

describe.skipIf(!haveFixture('stories260K/model.safetensors'))('trainer: full fine-tuning, dropout seeds, eval', () => {
  it('full fine-tuning lowers the loss; checkpoints and the output hold the whole model; abort + resume is bit-identical', async () => {
    const opts = { maxSteps: 10, gradAccum: 2, saveEvery: 4, lr: 1e-3, evalEvery: 5 };
    const a = await setup({ full: true });
    const outA = tmp('full-straight');
    const ra = await trainer(a, { ...opts, outputDir: outA }).train();
    expect(ra.reason).toBe('completed');
    expect(ra.evalLoss!).toBeLessThan(ra.initialEvalLoss! * 0.8);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) expect(existsSync(join(outA, f)), f).toBe(true);
    expect(existsSync(join(outA, 'adapter_model.safetensors'))).toBe(false);
    expect(existsSync(join(outA, 'checkpoint-10', 'model.safetensors'))).toBe(true);
    // The output folder is a model instill (and transformers) loads.
    const tuned = await loadModel(outA);
    const ids = [[1, 403, 407, 261, 378]];
    expect((await tuned.logits(ids)).toArray()).toEqual((await a.model.logits(ids)).toArray());

    const b = await setup({ full: true });
    const outB = tmp('full-resumed');
    const ac = new AbortController();
    const t1 = trainer(b, { ...opts, outputDir: outB, signal: ac.signal });
    t1.on('step', (e) => e.step === 6 && ac.abort());
    expect((await t1.train()).step).toBe(6);
    expect((await listCheckpoints(outB)).map((c) => c.step)).toEqual([4, 6]);
    const c = await setup({ full: true });
    const r2 = await trainer(c, { ...opts, outputDir: outB, resumeFrom: 'latest' }).train();
    expect(r2.step).toBe(10);
    expect(readFileSync(join(outB, 'model.safetensors'))).toEqual(readFileSync(join(outA, 'model.safetensors')));
    expect(readFileSync(join(outB, 'checkpoint-10', 'optimizer.safetensors'))).toEqual(readFileSync(join(outA, 'checkpoint-10', 'optimizer.safetensors')));

    // A LoRA run cannot resume a full run's checkpoints.
    const d = await setup();
    await expect(trainer(d, { ...opts, outputDir: outB, resumeFrom: 'latest' }).train()).rejects.toThrow(/settings differ/);
  });

  it('LoRA dropout: abort + resume ends with the same bits as a straight run (seeds from the micro-batch index)', async () => {
    const opts = { maxSteps: 8, gradAccum: 2, saveEvery: 3 };
    const a = await setup({ dropout: 0.2 });
    const outA = tmp('drop-straight');
    await trainer(a, { ...opts, outputDir: outA }).train();
    const b = await setup({ dropout: 0.2 });
    const outB = tmp('drop-resumed');
    const ac = new AbortController();
    const t1 = trainer(b, { ...opts, outputDir: outB, signal: ac.signal });
    t1.on('step', (e) => e.step === 5 && ac.abort());
    await t1.train();
    const c = await setup({ dropout: 0.2 });
    await trainer(c, { ...opts, outputDir: outB, resumeFrom: 'latest' }).train();
    expect(readFileSync(join(outB, 'adapter_model.safetensors'))).toEqual(readFileSync(join(outA, 'adapter_model.safetensors')));
    // ... and dropout is really on: without it the adapter differs.
    const e = await setup({ dropout: 0 });
    const outE = tmp('drop-none');
    await trainer(e, { ...opts, outputDir: outE }).train();
    expect(readFileSync(join(outE, 'adapter_model.safetensors'))).not.toEqual(readFileSync(join(outA, 'adapter_model.safetensors')));
  });

  it('dropout seeds are a pure function of (seed, micro-batch index)', () => {
    expect(dropoutSeedOf(1, 5)).toBe(dropoutSeedOf(1, 5));
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++) seen.add(dropoutSeedOf(1, i));
    expect(seen.size).toBe(1000);
    expect(dropoutSeedOf(2, 5)).not.toBe(dropoutSeedOf(1, 5));
    expect(dropoutSeedOf(1, 2 ** 33)).not.toBe(dropoutSeedOf(1, 0));
  });

  it('evaluation runs forward only (no lossAndGrads) and gives the same loss', async () => {
    const s = await setup();
    const t = trainer(s, { maxSteps: 1 });
    let calls = 0;
    const orig = s.model.lossAndGrads.bind(s.model);
    s.model.lossAndGrads = async (...args) => {
      calls++;
      return orig(...args);
    };
    const e = await t.evaluate();
    expect(calls).toBe(0);
    let sum = 0, n = 0;
    const { engineBatch } = await import('../../src/train/trainer.js');
    for (const { batch } of s.loaders.validation!.iterate({ epoch: 0, position: 0 }, 1)) {
      if (!batch.numTargets) continue;
      const r = await orig(engineBatch(batch), { returnGrads: false });
      sum += r.loss * r.tokens;
      n += r.tokens;
    }
    expect(calls).toBe(0);
    expect(e!.loss).toBeCloseTo(sum / n, 12);
  });
});
