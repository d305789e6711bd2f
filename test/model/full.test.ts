// Full fine-tuning (every weight trainable): gradients of every tensor kind against central finite
// differences of the float64 reference (stories260K: tied head + embedding, norms, all linears;
// tiny Qwen2 / Qwen3 / untied Llama models for q/k/v bias, q/k norm and lm_head), weight read-back and
// set-back by HF name, gradient accumulation, forward-only loss, saveModel round trip, errors.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ropeInvFreq } from '../../src/model/config.js';
import { loadModel, randomModel, type Model } from '../../src/model/model.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { fixturePath, haveFixture } from '../helpers/fixtures.js';
import { referenceLogits, referenceLoss, type Weights } from './helpers/reference_model.js';
import { base, cleanupTinyModels, writeModel } from './helpers/tiny_model.js';

const tmpDirs: string[] = [];
afterAll(() => {
  cleanupTinyModels();
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'instill-full-'));
  tmpDirs.push(d);
  return d;
}

const STORIES = 'stories260K';

function f64(model: Model): Weights {
  const w: Weights = {};
  for (const [n, v] of Object.entries(model.weights())) w[n] = Float64Array.from(v);
  return w;
}

/**
 * Checks the engine's full-model gradients at a few entries of each named tensor (the largest-|g|
 * entry, plus fixed ones) against central differences of the float64 reference loss.
 */
async function checkGrads(model: Model, ids: number[], labels: number[], names: string[], tol: number, extra: Record<string, number[]> = {}): Promise<void> {
  const spec = model.spec;
  const inv = Array.from(ropeInvFreq(spec));
  const w = f64(model);
  const res = await model.lossAndGrads({ inputIds: [ids], labels: [labels] });
  const lossRef = referenceLoss(referenceLogits(spec, w, ids, inv), labels);
  expect(Math.abs(res.loss - lossRef) / lossRef).toBeLessThan(1e-5);
  const grads = model.grads();
  expect(Object.keys(grads).sort()).toEqual(model.weightNames().sort());
  const h = 1e-5;
  for (const name of names) {
    const g = grads[name];
    expect(g, name).toBeDefined();
    let gmax = 0, imax = 0;
    g.forEach((v, i) => {
      if (Math.abs(v) > gmax) {
        gmax = Math.abs(v);
        imax = i;
      }
    });
    expect(gmax, `${name}: gradient is zero`).toBeGreaterThan(0);
    for (const i of [imax, 1, Math.floor(g.length / 2), g.length - 1, ...(extra[name] ?? [])]) {
      const orig = w[name][i];
      w[name][i] = orig + h;
      const lp = referenceLoss(referenceLogits(spec, w, ids, inv), labels);
      w[name][i] = orig - h;
      const lm = referenceLoss(referenceLogits(spec, w, ids, inv), labels);
      w[name][i] = orig;
      const fd = (lp - lm) / (2 * h);
      expect(Math.abs(g[i] - fd) / gmax, `${name}[${i}] engine ${g[i]} fd ${fd}`).toBeLessThan(tol);
    }
  }
}

describe('full fine-tuning', () => {
  it.skipIf(!haveFixture(STORIES))('stories260K: gradients of every tensor kind match finite differences of the float64 reference', async () => {
    const model = await loadModel(fixturePath(STORIES), { full: true });
    expect(model.fullTraining).toBe(true);
    const ids = [1, 403, 407, 261, 378, 29, 300, 281, 263, 283, 268, 265, 275, 291];
    const labels = [-100, -100, -100, 261, 378, 29, 300, 281, -100, 283, 268, 265, 275, 291];
    const names = [
      'model.embed_tokens.weight', // tied: embedding rows + LM head
      'model.norm.weight',
      'model.layers.0.input_layernorm.weight',
      'model.layers.4.post_attention_layernorm.weight',
      'model.layers.0.self_attn.q_proj.weight',
      'model.layers.2.self_attn.k_proj.weight',
      'model.layers.4.self_attn.v_proj.weight',
      'model.layers.1.self_attn.o_proj.weight',
      'model.layers.3.mlp.gate_proj.weight',
      'model.layers.0.mlp.up_proj.weight',
      'model.layers.4.mlp.down_proj.weight',
    ];
    const C = model.spec.hiddenSize;
    // Rows of tokens that are inputs but never targets (403, 407): the embedding's scatter plus the head's softmax term.
    await checkGrads(model, ids, labels, names, 2e-3, { 'model.embed_tokens.weight': [403 * C + 5, 403 * C + 40, 407 * C + 3] });
    model.dispose();
  });

  const archs: Array<{ name: string; config: Record<string, unknown>; extra: string[] }> = [
    { name: 'qwen2 (q/k/v bias)', config: { ...base, model_type: 'qwen2', tie_word_embeddings: true, use_sliding_window: false }, extra: ['model.layers.0.self_attn.q_proj.bias', 'model.layers.1.self_attn.k_proj.bias', 'model.layers.1.self_attn.v_proj.bias'] },
    { name: 'qwen3 (q/k norm, untied head)', config: { ...base, model_type: 'qwen3', head_dim: 16, tie_word_embeddings: false, attention_bias: false }, extra: ['model.layers.0.self_attn.q_norm.weight', 'model.layers.1.self_attn.k_norm.weight', 'lm_head.weight'] },
  ];
  for (const a of archs) {
    it(`${a.name}: gradients match finite differences`, async () => {
      const { dir } = writeModel(a.config, 3, false);
      const model = await loadModel(dir, { full: true });
      const ids = [3, 17, 42, 5, 63, 0, 9, 28, 28, 11, 50, 7];
      const labels = [-100, -100, 42, 5, 63, 0, 9, -100, 28, 11, 50, 7];
      await checkGrads(model, ids, labels, ['model.embed_tokens.weight', 'model.layers.1.mlp.down_proj.weight', 'model.layers.0.input_layernorm.weight', ...a.extra], 2e-3);
    });
  }

  it('accumulate adds micro-batch gradients; zeroGrads and a non-accumulating call reset them; loss() is forward-only', async () => {
    const model = randomModel({ ...base, model_type: 'llama', tie_word_embeddings: true }, { seed: 4, full: true });
    const b1 = { inputIds: [[1, 2, 3, 4, 5, 6]], labels: [[-100, 2, 3, 4, 5, 6]] };
    const b2 = { inputIds: [[7, 8, 9, 10]], labels: [[-100, -100, 9, 10]] };
    await model.lossAndGrads(b1, { normalizer: 7 });
    const g1 = model.grads();
    await model.lossAndGrads(b2, { normalizer: 7 });
    const g2 = model.grads();
    await model.lossAndGrads(b1, { normalizer: 7 });
    await model.lossAndGrads(b2, { normalizer: 7, accumulate: true });
    const g12 = model.grads();
    for (const n of model.weightNames()) {
      for (let i = 0; i < g12[n].length; i += 7) expect(g12[n][i]).toBeCloseTo(g1[n][i] + g2[n][i], 6);
    }
    const f = await model.loss(b1, { normalizer: 7 });
    const lg = await model.lossAndGrads(b1, { normalizer: 7 });
    expect(f.loss).toBe(lg.loss);
    expect(f.tokens).toBe(5);
    // loss() leaves the gradients as they were.
    const before = model.grads();
    await model.loss(b2);
    expect(model.grads()).toEqual(before);
    model.zeroGrads();
    expect(Object.values(model.grads()).every((g) => g.every((v) => v === 0))).toBe(true);
    // lossAndGrads returns the full gradients by HF name (unless returnGrads: false).
    const r = await model.lossAndGrads(b1);
    expect(Object.keys(r.grads).sort()).toEqual(model.weightNames().sort());
    expect(r.grads['model.norm.weight']).toEqual(model.grads()['model.norm.weight']);
    expect((await model.lossAndGrads(b1, { returnGrads: false })).grads).toEqual({});
    // setGrads writes gradients back (e.g. after clipping elsewhere).
    const half = Object.fromEntries(Object.entries(model.grads()).map(([n, g]) => [n, g.map((v) => v / 2)]));
    model.setGrads(half);
    expect(model.grads()).toEqual(half);
    expect(() => model.setGrads({ 'model.norm.weight': new Float32Array(2) }, { strict: false })).toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
  });

  it('setWeights on a bf16 model stores bf16-rounded values (a new tensor of the weight dtype)', () => {
    const model = randomModel({ ...base, model_type: 'llama', tie_word_embeddings: true }, { seed: 2, dtype: 'bf16' });
    const name = 'model.layers.0.mlp.up_proj.weight';
    const v = model.weights()[name].map((x, i) => x + (i % 2 ? 1e-3 : -1e-3));
    model.setWeights({ [name]: v }, { strict: false });
    const back = model.weights()[name];
    for (let i = 0; i < v.length; i += 13) expect(Math.abs(back[i] - v[i])).toBeLessThanOrEqual(Math.abs(v[i]) / 128 + 1e-30);
    expect(() => model.setGrads({})).toThrow(/setTrainable/);
  });

  it("a few of the engine's AdamW steps over every weight equal the reference and lower the loss; weights/setWeights round-trip", async () => {
    const cfg = { ...base, model_type: 'llama', tie_word_embeddings: true };
    const model = randomModel(cfg, { seed: 8, full: true });
    const twin = randomModel(cfg, { seed: 8, full: true });
    const batch = { inputIds: [[1, 5, 9, 13, 17, 21, 25, 29, 33, 37]], labels: [[-100, 5, 9, 13, 17, 21, 25, 29, 33, 37]] };
    const { ReferenceAdamW } = await import('../train/helpers/reference_optimizer.js');
    const ref = new ReferenceAdamW();
    const h = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };
    const first = (await model.loss(batch)).loss;
    const params = twin.weights();
    for (let s = 0; s < 8; s++) {
      await model.lossAndGrads(batch);
      await model.optimizerStep(h);
      await twin.lossAndGrads(batch);
      ref.update(params, twin.grads(), h);
      twin.setWeights(params);
    }
    const last = (await model.loss(batch)).loss;
    expect(last).toBeLessThan(first * 0.5);
    const w = model.weights();
    for (const n of Object.keys(params)) expect(w[n], n).toEqual(params[n]);
    expect(Object.keys(model.optimizerState().m).sort()).toEqual(model.weightNames().sort());
    model.setWeights(w);
    const back = model.weights();
    for (const n of Object.keys(w)) expect(back[n]).toEqual(w[n]);
  });

  it.skipIf(!haveFixture(STORIES))('saveModel writes an HF folder that reloads with identical logits', async () => {
    const model = await loadModel(fixturePath(STORIES), { full: true });
    const w = model.weights();
    // Move every weight a little so the saved model differs from the fixture.
    for (const v of Object.values(w)) for (let i = 0; i < v.length; i += 3) v[i] *= 1.01;
    model.setWeights(w);
    const out = join(tmp(), 'saved');
    model.saveModel(out);
    model.saveModel(out); // replacing an existing folder works too
    const f = SafetensorsFile.open(join(out, 'model.safetensors'));
    const names = f.names();
    f.close();
    expect(names).not.toContain('lm_head.weight');
    expect(names.sort()).toEqual(model.weightNames().sort());
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(cfg.tie_word_embeddings).toBe(true);
    expect(cfg.torch_dtype).toBe('float32');
    const again = await loadModel(out);
    const ids = [[1, 403, 407, 261, 378, 29, 300]];
    const a = (await model.logits(ids)).toArray();
    const b = (await again.logits(ids)).toArray();
    expect(b).toEqual(a);
    const base0 = await loadModel(fixturePath(STORIES));
    expect((await base0.logits(ids)).toArray()).not.toEqual(a);
    expect((await again.generate('Once upon a time', { maxNewTokens: 8 })).text).toBe((await model.generate('Once upon a time', { maxNewTokens: 8 })).text);
  });

  it('refuses what full mode cannot do, with errors that say why', async () => {
    const cfg = { ...base, model_type: 'llama', tie_word_embeddings: true };
    const m = randomModel(cfg, { seed: 1 });
    expect(() => m.grads()).toThrow(/setTrainable\('all'\)/);
    m.addLora({ r: 2 });
    expect(() => m.setTrainable('all')).toThrow(/LoRA adapters/);
    const full = randomModel(cfg, { seed: 1, full: true });
    expect(() => full.addLora({ r: 2 })).toThrow(/full fine-tuning mode/);
    expect(() => randomModel(cfg, { dtype: 'bf16', full: true })).toThrow(expect.objectContaining({ code: 'E_DTYPE' }));
    expect(() => full.setWeights({ nope: new Float32Array(1) })).toThrow(/not a weight/);
    expect(() => full.setWeights({ 'model.norm.weight': new Float32Array(3) }, { strict: false })).toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
    expect(() => full.setWeights({ 'model.norm.weight': new Float32Array(32) })).toThrow(/missing/);
    expect(() => full.setTrainable('some' as never)).toThrow(/'all' or 'none'/);
    expect(() => full.adamwStep({ lr: -1 })).toThrow(expect.objectContaining({ code: 'E_ARG' }));
    full.setTrainable('none');
    expect(() => full.grads()).toThrow();
    await expect(loadModel('/nonexistent', { full: 'yes' as never })).rejects.toThrow(/boolean for full/);
  });

  it("randomModel init 'tiled': seeded N(0, 0.02²) values at copy speed, deterministic, norms 1", () => {
    const cfg = { ...base, model_type: 'llama', tie_word_embeddings: true };
    const a = randomModel(cfg, { seed: 5, init: 'tiled' }).weights();
    const b = randomModel(cfg, { seed: 5, init: 'tiled' }).weights();
    const c = randomModel(cfg, { seed: 6, init: 'tiled' }).weights();
    const w = a['model.layers.1.mlp.down_proj.weight'];
    expect(Array.from(w)).toEqual(Array.from(b['model.layers.1.mlp.down_proj.weight']));
    expect(Array.from(w)).not.toEqual(Array.from(c['model.layers.1.mlp.down_proj.weight']));
    const mean = w.reduce((s, x) => s + x, 0) / w.length;
    const std = Math.sqrt(w.reduce((s, x) => s + (x - mean) ** 2, 0) / w.length);
    expect(std).toBeGreaterThan(0.015);
    expect(std).toBeLessThan(0.025);
    expect(Array.from(a['model.norm.weight']).every((x) => x === 1)).toBe(true);
    expect(() => randomModel(cfg, { init: 'uniform' as never })).toThrow(expect.objectContaining({ code: 'E_ARG' }));
  });
});
