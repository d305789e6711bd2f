// LoRA dropout: the engine's masks (ops/lora_dropout.h) rebuilt in TypeScript (src/model/dropout.ts)
// and fed to the float64 reference give the engine's loss and (by finite differences) gradients;
// dropout is off outside lossAndGrads; checkpointing regenerates the same masks.
import { afterAll, describe, expect, it } from 'vitest';
import { ropeInvFreq } from '../../src/model/config.js';
import { dropoutHash, dropoutMultiplier, linearDropoutSeed } from '../../src/model/dropout.js';
import { LORA_TARGETS, loadModel, Rng } from '../../src/model/model.js';
import { referenceLogits, referenceLoss, type Weights } from './helpers/reference_model.js';
import { base, cleanupTinyModels, writeModel } from './helpers/tiny_model.js';
import { relError } from '../helpers/compare.js';

afterAll(() => cleanupTinyModels());

const ids = [3, 17, 42, 5, 63, 0, 9, 28, 28, 11, 50, 7];
const labels = [-100, -100, 42, 5, 63, 0, 9, -100, 28, 11, 50, 7];

describe('LoRA dropout', () => {
  it('keeps a fraction 1 - p of elements, deterministically', () => {
    let kept = 0;
    const n = 200000;
    for (let i = 0; i < n; i++) if (dropoutMultiplier(77, i, 0.3) > 0) kept++;
    expect(Math.abs(kept / n - 0.7)).toBeLessThan(0.005);
    expect(dropoutHash(5, 123)).toBe(dropoutHash(5, 123));
    expect(dropoutHash(5, 123)).not.toBe(dropoutHash(6, 123));
    expect(dropoutMultiplier(1, 0, 0)).toBe(1);
  });

  it('loss and gradients equal the float64 reference with the same masks (qwen2 with bias)', async () => {
    const { dir, spec, w } = writeModel({ ...base, model_type: 'qwen2', tie_word_embeddings: true }, 31, false);
    const model = await loadModel(dir);
    const p = 0.25;
    model.addLora({ r: 2, alpha: 4, targetModules: [...LORA_TARGETS], dropout: p, seed: 3 });
    const aw = model.adapterWeights();
    const rng = new Rng(5);
    for (const n of Object.keys(aw)) if (n.includes('lora_B')) aw[n] = aw[n].map(() => 0.2 * rng.normal());
    model.setAdapterWeights(aw);
    const lw: Weights = {};
    for (const [n, v] of Object.entries(aw)) lw[n] = Float64Array.from(v);
    const stepSeed = 1234;
    const inv = Array.from(ropeInvFreq(spec));
    const lora = {
      scale: 2,
      targets: [...LORA_TARGETS],
      w: lw,
      dropout: (l: number, t: number, i: number) => dropoutMultiplier(linearDropoutSeed(stepSeed, l, t), i, p),
    };
    const res = await model.lossAndGrads({ inputIds: [ids], labels: [labels] }, { dropoutSeed: stepSeed });
    const lossRef = referenceLoss(referenceLogits(spec, w, ids, inv, lora), labels);
    expect(Math.abs(res.loss - lossRef) / lossRef).toBeLessThan(1e-5);
    const noDrop = referenceLoss(referenceLogits(spec, w, ids, inv, { ...lora, dropout: undefined }), labels);
    expect(Math.abs(noDrop - lossRef)).toBeGreaterThan(1e-4); // the masks matter
    const h = 1e-5;
    for (const name of ['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight', 'base_model.model.model.layers.1.mlp.down_proj.lora_A.weight', 'base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight']) {
      const g = res.grads[name];
      const gmax = g.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
      for (const i of [0, 5, g.length - 1]) {
        const o = lw[name][i];
        lw[name][i] = o + h;
        const lp = referenceLoss(referenceLogits(spec, w, ids, inv, lora), labels);
        lw[name][i] = o - h;
        const lm = referenceLoss(referenceLogits(spec, w, ids, inv, lora), labels);
        lw[name][i] = o;
        expect(Math.abs(g[i] - (lp - lm) / (2 * h)) / gmax, `${name}[${i}]`).toBeLessThan(1e-3);
      }
    }
    // same seed, same result; another seed, another loss; checkpointing regenerates the masks
    const again = await model.lossAndGrads({ inputIds: [ids], labels: [labels] }, { dropoutSeed: stepSeed });
    expect(again.loss).toBe(res.loss);
    const other = await model.lossAndGrads({ inputIds: [ids], labels: [labels] }, { dropoutSeed: stepSeed + 1 });
    expect(other.loss).not.toBe(res.loss);
    model.setGradientCheckpointing(true);
    const ck = await model.lossAndGrads({ inputIds: [ids], labels: [labels] }, { dropoutSeed: stepSeed });
    model.setGradientCheckpointing(false);
    expect(ck.loss).toBe(res.loss);
    for (const n of Object.keys(res.grads)) expect(relError(ck.grads[n], res.grads[n]), n).toBeLessThan(1e-6);
    // default seeds change per call
    const d1 = await model.lossAndGrads({ inputIds: [ids], labels: [labels] });
    const d2 = await model.lossAndGrads({ inputIds: [ids], labels: [labels] });
    expect(d1.loss).not.toBe(d2.loss);
  });

  it('is off for logits and generation', async () => {
    const { dir } = writeModel({ ...base, model_type: 'llama', tie_word_embeddings: true }, 8, false);
    const a = await loadModel(dir);
    const b = await loadModel(dir);
    a.addLora({ r: 2, targetModules: ['q_proj', 'up_proj'], dropout: 0.5, seed: 1 });
    b.addLora({ r: 2, targetModules: ['q_proj', 'up_proj'], dropout: 0, seed: 1 });
    const w = a.adapterWeights();
    for (const n of Object.keys(w)) if (n.includes('lora_B')) w[n] = w[n].map((_, i) => 0.1 * Math.sin(i + 1));
    a.setAdapterWeights(w);
    b.setAdapterWeights(w);
    expect(Array.from((await a.logits([ids])).toArray())).toEqual(Array.from((await b.logits([ids])).toArray()));
    expect((await a.generate(ids.slice(0, 4), { maxNewTokens: 5, stopTokenIds: [] })).ids).toEqual((await b.generate(ids.slice(0, 4), { maxNewTokens: 5, stopTokenIds: [] })).ids);
  });
});
