// instill merge: the merged model's logits equal base + adapter (single file and sharded), other tensors
// are copied byte for byte, and bf16/f16 rounding is nearest-even.
import { copyFileSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { f32ToBf16, f32ToF16, mergeAdapter } from '../../src/adapter/merge.js';
import { loadModel, Rng } from '../../src/model/model.js';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../src/model/safetensors.js';
import { haveFixture } from '../helpers/fixtures.js';
import { MODEL_DIR, tmp } from './helpers/setup.js';

const IDS = [1, 403, 407, 261, 378, 30, 290, 300, 310, 400, 411, 280];

async function adapter(): Promise<string> {
  const m = await loadModel(MODEL_DIR);
  m.addLora({ r: 4, alpha: 16, targetModules: ['q_proj', 'o_proj', 'up_proj', 'down_proj'], seed: 5 });
  const w = m.adapterWeights();
  const rng = new Rng(9);
  for (const [k, v] of Object.entries(w)) if (k.includes('lora_B')) for (let i = 0; i < v.length; i++) v[i] = 0.2 * rng.normal();
  m.setAdapterWeights(w);
  const dir = tmp('adapter');
  m.saveAdapter(dir);
  return dir;
}

async function logitsOf(modelDir: string, adapterDir?: string): Promise<Float32Array> {
  const m = await loadModel(modelDir);
  if (adapterDir) m.loadAdapter(adapterDir);
  return (await m.logits([IDS])).toArray() as Float32Array;
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

describe.skipIf(!haveFixture('stories260K/model.safetensors'))('merge', () => {
  it('single file: merged logits = base + adapter logits; untouched tensors byte-identical; config copied', async () => {
    const ad = await adapter();
    const out = join(tmp('merged'), 'm');
    const r = await mergeAdapter(MODEL_DIR, ad, out);
    expect(r.merged).toHaveLength(5 * 4);
    expect(r.files).toEqual(expect.arrayContaining(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']));
    const withAdapter = await logitsOf(MODEL_DIR, ad);
    const base = await logitsOf(MODEL_DIR);
    const merged = await logitsOf(out);
    expect(maxDiff(base, withAdapter)).toBeGreaterThan(0.1); // the adapter changes the model
    expect(maxDiff(merged, withAdapter)).toBeLessThan(1e-4);
    const a = SafetensorsFile.open(join(MODEL_DIR, 'model.safetensors'));
    const b = SafetensorsFile.open(join(out, 'model.safetensors'));
    try {
      expect(b.names().sort()).toEqual(a.names().sort());
      expect(Buffer.from(b.readBytes('model.layers.0.self_attn.k_proj.weight')).equals(Buffer.from(a.readBytes('model.layers.0.self_attn.k_proj.weight')))).toBe(true);
      expect(Buffer.from(b.readBytes('model.layers.0.self_attn.q_proj.weight')).equals(Buffer.from(a.readBytes('model.layers.0.self_attn.q_proj.weight')))).toBe(false);
    } finally {
      a.close();
      b.close();
    }
    expect(readFileSync(join(out, 'config.json'), 'utf8')).toBe(readFileSync(join(MODEL_DIR, 'config.json'), 'utf8'));
    await expect(mergeAdapter(MODEL_DIR, ad, out)).rejects.toThrow(/not empty/);
  });

  it('sharded base: the same shards and index come out, and the logits match', async () => {
    const ad = await adapter();
    const base = tmp('sharded');
    for (const f of readdirSync(MODEL_DIR)) if (f !== 'model.safetensors') copyFileSync(join(MODEL_DIR, f), join(base, f));
    const src = SafetensorsFile.open(join(MODEL_DIR, 'model.safetensors'));
    const shards: Record<string, TensorToWrite>[] = [{}, {}];
    const map: Record<string, string> = {};
    src.names().sort().forEach((n, i) => {
      const s = i % 2;
      shards[s][n] = { dtype: 'F32', shape: src.info(n).shape, data: src.readArray(n) as Float32Array };
      map[n] = `model-0000${s + 1}-of-00002.safetensors`;
    });
    src.close();
    shards.forEach((t, s) => writeSafetensors(join(base, `model-0000${s + 1}-of-00002.safetensors`), t));
    writeFileSync(join(base, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: map }));
    const out = join(tmp('merged-sharded'), 'm');
    await mergeAdapter(base, ad, out);
    expect(readdirSync(out)).toEqual(expect.arrayContaining(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']));
    expect(readdirSync(out)).not.toContain('model.safetensors');
    expect(maxDiff(await logitsOf(out), await logitsOf(MODEL_DIR, ad))).toBeLessThan(1e-4);
  });

  it('f32 -> bf16 / f16 round to nearest even', () => {
    const x = Float32Array.from([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.5, 65504, 1e6, 2 ** -24, 0.1]);
    expect([...f32ToBf16(x)].map((v) => v.toString(16))).toEqual(['3f80', '3f80', '3f82', 'c020', '4780', '4974', '3380', '3dcd']);
    const h = Float32Array.from([1, 1 + 2 ** -11, 1 + 3 * 2 ** -11, -2.5, 65504, 1e6, 2 ** -24, 0.1, 3 * 2 ** -25]);
    expect([...f32ToF16(h)].map((v) => v.toString(16))).toEqual(['3c00', '3c00', '3c02', 'c100', '7bff', '7c00', '1', '2e66', '2']);
  });
});
