// Tiny random models of every supported architecture, written to a temporary folder as a
// Hugging Face checkpoint (sharded, BF16 / F32 mixes), loaded by loadModel and compared with an
// independent float64 reference (helpers/reference_model.ts): logits, loss, and LoRA gradients by
// central finite differences of the float64 reference.
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ropeInvFreq, specFromConfig } from '../../src/model/config.js';
import { loadModel, Rng } from '../../src/model/model.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { referenceLogits, referenceLoss, type Weights } from './helpers/reference_model.js';
import { base, cleanupTinyModels, writeModel } from './helpers/tiny_model.js';

afterAll(() => cleanupTinyModels());

const cases: Array<{ name: string; config: Record<string, unknown>; bf16: boolean }> = [
  { name: 'qwen2 (q/k/v bias, tied, GQA)', config: { ...base, model_type: 'qwen2', tie_word_embeddings: true, use_sliding_window: false, sliding_window: 32 }, bf16: false },
  { name: 'qwen3 (q/k norm, head_dim 16 != hidden/heads, untied)', config: { ...base, model_type: 'qwen3', head_dim: 16, tie_word_embeddings: false, attention_bias: false }, bf16: false },
  {
    name: 'llama 3 (llama3 rope scaling, bf16 shards, untied)',
    config: { ...base, model_type: 'llama', tie_word_embeddings: false, rope_theta: 500000, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } },
    bf16: true,
  },
  { name: 'mistral with a sliding window of 5 tokens', config: { ...base, model_type: 'mistral', tie_word_embeddings: false, sliding_window: 5, max_position_embeddings: 128 }, bf16: false },
  { name: 'mistral (linear rope scaling, MHA)', config: { ...base, model_type: 'mistral', num_key_value_heads: 4, tie_word_embeddings: false, sliding_window: null, rope_scaling: { type: 'linear', factor: 2 } }, bf16: false },
];

const ids = [3, 17, 42, 5, 63, 0, 9, 28, 28, 11, 50, 7];
const labels = [-100, -100, 42, 5, 63, 0, 9, -100, 28, 11, 50, 7];

describe('architectures against a float64 reference', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const { dir, spec, w } = writeModel(c.config, 11, c.bf16);
      const model = await loadModel(dir);
      const inv = Array.from(ropeInvFreq(spec));
      const refLogits = referenceLogits(spec, w, ids, inv);
      const got = (await model.logits([ids])).toArray() as Float32Array;
      let maxAbs = 0, maxDiff = 0;
      refLogits.forEach((row, t) => row.forEach((v, j) => {
        maxAbs = Math.max(maxAbs, Math.abs(v));
        maxDiff = Math.max(maxDiff, Math.abs(got[t * spec.vocabSize + j] - v));
      }));
      expect(maxAbs).toBeGreaterThan(0.5);
      expect(maxDiff / maxAbs).toBeLessThan(2e-5);

      // LoRA on all targets with non-zero B; compare gradients to central differences of the f64 reference.
      const targets = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
      model.addLora({ r: 2, alpha: 4, targetModules: targets as never, seed: 5 });
      const aw = model.adapterWeights();
      const rng = new Rng(99);
      for (const n of Object.keys(aw)) if (n.includes('lora_B')) aw[n] = aw[n].map(() => 0.1 * rng.normal());
      model.setAdapterWeights(aw);
      const lw: Weights = {};
      for (const [n, v] of Object.entries(aw)) lw[n] = Float64Array.from(v);
      const lora = { scale: 2, targets, w: lw };
      // generate (KV cache, one token per step) equals greedy over full forwards, with the adapters on.
      const gen = await model.generate(ids.slice(0, 5), { maxNewTokens: 12, stopTokenIds: [] });
      const seq = ids.slice(0, 5);
      for (let s = 0; s < 12; s++) {
        const lg = (await model.logits([seq])).toArray() as Float32Array;
        const last = lg.subarray((seq.length - 1) * spec.vocabSize, seq.length * spec.vocabSize);
        let best = 0;
        for (let j = 1; j < last.length; j++) if (last[j] > last[best]) best = j;
        seq.push(best);
      }
      expect(gen.ids).toEqual(seq.slice(5));
      const res = await model.lossAndGrads({ inputIds: [ids], labels: [labels] });
      const lossRef = referenceLoss(referenceLogits(spec, w, ids, inv, lora), labels);
      expect(Math.abs(res.loss - lossRef) / lossRef).toBeLessThan(1e-5);
      const h = 1e-5;
      const pick = [
        'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight',
        'base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight',
        'base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight',
        'base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight',
        'base_model.model.model.layers.1.mlp.gate_proj.lora_A.weight',
        'base_model.model.model.layers.0.mlp.up_proj.lora_B.weight',
        'base_model.model.model.layers.1.mlp.down_proj.lora_A.weight',
      ];
      for (const name of pick) {
        const g = res.grads[name];
        let gmax = 0;
        for (const v of g) gmax = Math.max(gmax, Math.abs(v));
        expect(gmax, name).toBeGreaterThan(0);
        for (const i of [0, 3, g.length - 1]) {
          const orig = lw[name][i];
          lw[name][i] = orig + h;
          const lp = referenceLoss(referenceLogits(spec, w, ids, inv, lora), labels);
          lw[name][i] = orig - h;
          const lm = referenceLoss(referenceLogits(spec, w, ids, inv, lora), labels);
          lw[name][i] = orig;
          const fd = (lp - lm) / (2 * h);
          expect(Math.abs(g[i] - fd) / gmax, `${name}[${i}] engine ${g[i]} fd ${fd}`).toBeLessThan(1e-3);
        }
      }
    });
  }

  it('llama3 rope scaling keeps high frequencies, divides low ones by the factor, smooths between', () => {
    const cfg = { ...base, model_type: 'llama', hidden_size: 2048, num_attention_heads: 32, num_key_value_heads: 8, rope_theta: 500000, rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } };
    const spec = specFromConfig(cfg);
    const scaled = ropeInvFreq(spec);
    const plain = ropeInvFreq({ ...spec, ropeScaling: { type: 'none' } });
    let high = 0, low = 0, mid = 0;
    for (let i = 0; i < scaled.length; i++) {
      const wl = (2 * Math.PI) / plain[i];
      if (wl < 8192 / 4) {
        expect(scaled[i]).toBe(plain[i]);
        high++;
      } else if (wl > 8192) {
        expect(scaled[i]).toBeCloseTo(plain[i] / 32, 12);
        low++;
      } else {
        expect(scaled[i]).toBeLessThan(plain[i]);
        expect(scaled[i]).toBeGreaterThan(plain[i] / 32);
        mid++;
      }
    }
    expect(high > 0 && low > 0 && mid > 0).toBe(true);
    expect(plain[1]).toBeCloseTo(Math.pow(500000, -2 / 64), 7);
  });

  it('long sequence (several key tiles and query blocks) matches the reference', async () => {
    const { dir, spec, w } = writeModel({ ...base, model_type: 'qwen2', tie_word_embeddings: true }, 21, false);
    const model = await loadModel(dir);
    const rng = new Rng(1);
    const long = Array.from({ length: 150 }, () => Math.floor(rng.next() * 64));
    const ref = referenceLogits(spec, w, long, Array.from(ropeInvFreq(spec)));
    const got = (await model.logits([long])).toArray() as Float32Array;
    let maxAbs = 0, maxDiff = 0;
    ref.forEach((row, t) => row.forEach((v, j) => {
      maxAbs = Math.max(maxAbs, Math.abs(v));
      maxDiff = Math.max(maxDiff, Math.abs(got[t * 64 + j] - v));
    }));
    expect(maxDiff / maxAbs).toBeLessThan(2e-5);
    const labelsLong = long.map((x, i) => (i % 3 === 0 ? -100 : x));
    const r = await model.lossAndGrads({ inputIds: [long], labels: [labelsLong] });
    expect(Math.abs(r.loss - referenceLoss(ref, labelsLong)) / r.loss).toBeLessThan(1e-5);
  });

  it('loads f32 weights into bf16 memory on request and stays close', async () => {
    const { dir } = writeModel({ ...base, model_type: 'llama', tie_word_embeddings: true }, 3, false);
    const m32 = await loadModel(dir);
    const m16 = await loadModel(dir, { dtype: 'bf16' });
    const a = (await m32.logits([ids])).toArray() as Float32Array;
    const b = (await m16.logits([ids])).toArray() as Float32Array;
    let d = 0, m = 0;
    for (let i = 0; i < a.length; i++) {
      d = Math.max(d, Math.abs(a[i] - b[i]));
      m = Math.max(m, Math.abs(a[i]));
    }
    expect(d).toBeGreaterThan(0);
    expect(d / m).toBeLessThan(3e-2);
    // training through bf16 frozen weights stays close to f32
    for (const mm of [m32, m16]) {
      mm.addLora({ r: 2, alpha: 4, targetModules: ['q_proj', 'v_proj', 'down_proj'], seed: 1 });
      const aw = mm.adapterWeights();
      for (const n of Object.keys(aw)) if (n.includes('lora_B')) aw[n] = aw[n].map((_, i) => 0.1 * Math.cos(i));
      mm.setAdapterWeights(aw);
    }
    const g32 = await m32.lossAndGrads({ inputIds: [ids], labels: [labels] });
    const g16 = await m16.lossAndGrads({ inputIds: [ids], labels: [labels] });
    expect(Math.abs(g16.loss - g32.loss) / g32.loss).toBeLessThan(2e-2);
    for (const n of Object.keys(g32.grads)) {
      let dd = 0, mx = 0;
      g32.grads[n].forEach((v, i) => {
        dd = Math.max(dd, Math.abs(v - g16.grads[n][i]));
        mx = Math.max(mx, Math.abs(v));
      });
      expect(dd / mx, n).toBeLessThan(5e-2);
    }
    const m16h = await loadModel(dir, { dtype: 'f16' });
    const c = (await m16h.logits([ids])).toArray() as Float32Array;
    let dh = 0;
    for (let i = 0; i < a.length; i++) dh = Math.max(dh, Math.abs(a[i] - c[i]));
    expect(dh / m).toBeLessThan(5e-3); // f16 keeps 3 more mantissa bits than bf16
    const f = SafetensorsFile.open(join(dir, 'model-00001-of-00002.safetensors'));
    expect(f.names().length).toBeGreaterThan(3);
    f.close();
  });
});
