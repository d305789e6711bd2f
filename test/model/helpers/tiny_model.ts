// Tiny random Hugging Face checkpoints (config.json + two safetensors shards + index) in a
// temporary folder, with the float64 values as stored, for tests against helpers/reference_model.ts.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { specFromConfig, type ModelSpec } from '../../../src/model/config.js';
import { Rng } from '../../../src/model/model.js';
import { writeSafetensors, type TensorToWrite } from '../../../src/model/safetensors.js';
import type { Weights } from './reference_model.js';

const dirs: string[] = [];
export function cleanupTinyModels(): void {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

function f32ToBf16Bits(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = (u[i] + 0x7fff + ((u[i] >> 16) & 1)) >>> 16;
  return out;
}

/** Writes config + 2 shards + index; returns the dir and the float64 weights as stored. */
export function writeModel(config: Record<string, unknown>, seed: number, bf16: boolean): { dir: string; spec: ModelSpec; w: Weights } {
  const spec = specFromConfig(config);
  const rng = new Rng(seed);
  const shapes: Record<string, number[]> = {};
  const C = spec.hiddenSize, D = spec.headDim, F = spec.intermediateSize;
  shapes['model.embed_tokens.weight'] = [spec.vocabSize, C];
  shapes['model.norm.weight'] = [C];
  if (!spec.tieWordEmbeddings) shapes['lm_head.weight'] = [spec.vocabSize, C];
  for (let l = 0; l < spec.numLayers; l++) {
    const p = `model.layers.${l}.`;
    shapes[p + 'input_layernorm.weight'] = [C];
    shapes[p + 'post_attention_layernorm.weight'] = [C];
    shapes[p + 'self_attn.q_proj.weight'] = [spec.numHeads * D, C];
    shapes[p + 'self_attn.k_proj.weight'] = [spec.numKvHeads * D, C];
    shapes[p + 'self_attn.v_proj.weight'] = [spec.numKvHeads * D, C];
    shapes[p + 'self_attn.o_proj.weight'] = [C, spec.numHeads * D];
    if (spec.qkvBias) {
      shapes[p + 'self_attn.q_proj.bias'] = [spec.numHeads * D];
      shapes[p + 'self_attn.k_proj.bias'] = [spec.numKvHeads * D];
      shapes[p + 'self_attn.v_proj.bias'] = [spec.numKvHeads * D];
    }
    if (spec.qkNorm) {
      shapes[p + 'self_attn.q_norm.weight'] = [D];
      shapes[p + 'self_attn.k_norm.weight'] = [D];
    }
    shapes[p + 'mlp.gate_proj.weight'] = [F, C];
    shapes[p + 'mlp.up_proj.weight'] = [F, C];
    shapes[p + 'mlp.down_proj.weight'] = [C, F];
  }
  const dir = mkdtempSync(join(tmpdir(), 'instill-arch-'));
  dirs.push(dir);
  const shards: Array<Record<string, TensorToWrite>> = [{}, {}];
  const weightMap: Record<string, string> = {};
  const w: Weights = {};
  Object.entries(shapes).forEach(([name, shape], idx) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const isNorm = shape.length === 1 && !name.endsWith('.bias');
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = isNorm ? 1 + 0.2 * rng.normal() : (name.includes('embed') || name.includes('lm_head') ? 0.5 : 0.15) * rng.normal();
    const shard = idx % 2;
    const file = `model-0000${shard + 1}-of-00002.safetensors`;
    weightMap[name] = file;
    if (bf16 && shape.length === 2) {
      const bits = f32ToBf16Bits(data);
      shards[shard][name] = { dtype: 'BF16', shape, data: bits };
      w[name] = Float64Array.from(bits, (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0]);
    } else {
      shards[shard][name] = { dtype: 'F32', shape, data };
      w[name] = Float64Array.from(data);
    }
  });
  shards.forEach((s, i) => writeSafetensors(join(dir, `model-0000${i + 1}-of-00002.safetensors`), s));
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  return { dir, spec, w };
}

export const base = {
  hidden_size: 32, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
  vocab_size: 64, max_position_embeddings: 128, rms_norm_eps: 1e-6, rope_theta: 10000, hidden_act: 'silu',
};

