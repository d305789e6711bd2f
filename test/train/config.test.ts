// instill train settings: YAML (nested, snake_case) + flags, defaults, and errors that name the key.
import { describe, expect, it } from 'vitest';
import { resolveTrainConfig, settingsFromYaml } from '../../src/train/config.js';
import { progressLine, fmtDuration } from '../../src/cli/train.js';

const yaml = `
model: models/smol
data: [a.jsonl, b.jsonl]
output: out
lora:
  r: 16
  alpha: 32
  target_modules: [q_proj, v_proj]
schedule: linear
warmup_ratio: 0.1
lr: 1e-4
`;

describe('train config', () => {
  it('YAML with nesting and snake_case, flags override, defaults fill in', () => {
    const file = settingsFromYaml(yaml, 'cfg.yaml');
    const c = resolveTrainConfig(file, { lr: '3e-4', 'grad-accum': '4', packing: false });
    expect(c).toMatchObject({
      model: 'models/smol', data: ['a.jsonl', 'b.jsonl'], output: 'out', loraR: 16, loraAlpha: 32, targetModules: ['q_proj', 'v_proj'],
      schedule: 'linear', warmupRatio: 0.1, lr: 3e-4, gradAccum: 4, packing: false, batchSize: 4, epochs: 1, maxGradNorm: 1, seed: 0,
    });
    expect(resolveTrainConfig({ model: 'm', data: ['d'], output: 'o', 'lora-r': 4 }, {}).loraAlpha).toBe(8);
    expect(resolveTrainConfig({}, { model: 'm', data: ['d'], output: 'o', 'target-modules': ['q_proj,k_proj'] }).targetModules).toEqual(['q_proj', 'k_proj']);
  });
  it('frozen weights default to bf16 for LoRA on a GPU, f32 on the CPU and for full fine-tuning; --dtype wins', () => {
    const base = { model: 'm', data: ['d'], output: 'o' };
    expect(resolveTrainConfig(base, {}).dtype).toBe('f32');
    expect(resolveTrainConfig(base, { device: 'cuda' }).dtype).toBe('bf16');
    expect(resolveTrainConfig({ ...base, device: 'cuda' }, {}).dtype).toBe('bf16');
    expect(resolveTrainConfig(base, { device: 'cuda', full: true }).dtype).toBe('f32');
    expect(resolveTrainConfig(base, { device: 'cuda', dtype: 'f32' }).dtype).toBe('f32');
    expect(resolveTrainConfig(base, { device: 'cpu', dtype: 'bf16' }).dtype).toBe('bf16');
  });
  it('activations: auto unless set, one of auto, f32, bf16, bf16-mlp (from a flag or the YAML file)', () => {
    const base = { model: 'm', data: ['d'], output: 'o' };
    expect(resolveTrainConfig(base, {}).activations).toBe('auto');
    expect(resolveTrainConfig(base, { activations: 'f32' }).activations).toBe('f32');
    expect(resolveTrainConfig({ ...base, activations: 'bf16-mlp' }, {}).activations).toBe('bf16-mlp');
    expect(() => resolveTrainConfig(base, { activations: 'fp8' })).toThrow(/auto, f32, bf16, bf16-mlp|activations/);
  });
  it('errors name the key and what it takes', () => {
    expect(() => settingsFromYaml('lora_rank: 8', 'c.yaml')).toThrow(/c.yaml: unknown setting 'lora_rank'/);
    expect(() => settingsFromYaml('lr: fast', 'c.yaml')).toThrow(/Expected a number >= 0 for 'lr' in c.yaml but received 'fast'/);
    expect(() => settingsFromYaml('schedule: step', 'c.yaml')).toThrow(/one of constant, linear, cosine/);
    expect(() => resolveTrainConfig({}, { data: ['d'], output: 'o' })).toThrow(/--model is required/);
    expect(() => resolveTrainConfig({ model: 'm', data: ['d'], output: 'o' }, { 'batch-size': '0' })).toThrow(/integer >= 1 for --batch-size/);
    expect(() => resolveTrainConfig({ model: 'm', data: ['d'], output: 'o' }, { 'target-modules': ['q_proj,lm_head'] })).toThrow(/q_proj, k_proj/);
    expect(() => resolveTrainConfig({ model: 'm', data: ['d'], output: 'o' }, { quiet: true, jsonl: true })).toThrow(/exclude/);
  });
  it('progress line', () => {
    expect(fmtDuration(3725)).toBe('1:02:05');
    const e = { step: 7, totalSteps: 120, epoch: 0, loss: 1.23456, lr: 2e-4, gradNorm: 1, targetTokens: 10, tokens: 100, tokensPerSec: 12345,
      flops: 4e13, flopsPerSec: 3.215e14, elapsedSeconds: 3, etaSeconds: 65 };
    expect(progressLine(e, 1.5)).toBe('step   7/120  loss 1.2346  lr 2.00e-4  12.3k tok/s  ETA 1:05  val 1.5000');
    // on a GPU: the model TFLOP/s, and the MFU where the GPU's peak is known
    expect(progressLine(e, null, { peakTflops: 989 })).toBe('step   7/120  loss 1.2346  lr 2.00e-4  12.3k tok/s  322 TFLOP/s (32.5% MFU)  ETA 1:05');
    expect(progressLine({ ...e, flopsPerSec: 4.56e13 }, null, { peakTflops: null })).toBe('step   7/120  loss 1.2346  lr 2.00e-4  12.3k tok/s  45.6 TFLOP/s  ETA 1:05');
  });
});
