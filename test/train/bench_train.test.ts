// `instill bench train`: a tiny config runs one timed step and reports its device, tokens/s, peak memory
// and op profile; --device names only devices this build has, with the engine's reason otherwise.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { runTrainBench } from '../../bench/train/index.js';
import { run } from '../../src/cli/bench.js';
import { runtime } from '../../src/runtime.js';
import { tmp } from './helpers/setup.js';

function tinyConfig(): string {
  const path = join(tmp('bench-train'), 'config.json');
  writeFileSync(path, JSON.stringify({
    model_type: 'llama', hidden_size: 48, intermediate_size: 88, num_attention_heads: 4, num_key_value_heads: 2,
    num_hidden_layers: 2, vocab_size: 301, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: true,
    max_position_embeddings: 256,
  }));
  return path;
}

describe('instill bench train', () => {
  it('times a step on the CPU: tokens/s, peak memory, loss, and with --profile each op and its parts', async () => {
    const r = await runTrainBench({
      config: tinyConfig(), batch: 2, seq: 24, rank: 4, dtype: 'f32', device: 'cpu', steps: 1, torch: false, profile: true,
      progress: () => {},
    });
    expect(r.device).toBe('cpu');
    expect(r.activations).toBe('f32');  // the CPU's default
    expect(r.layers).toBe(2);
    expect(r.instill.tokensPerSec).toBeGreaterThan(0);
    expect(r.instill.tokensPerSec).toBeCloseTo(48 / r.instill.stepSeconds, 6);
    expect(Number.isFinite(r.instill.loss) && r.instill.loss > 0).toBe(true);
    if (r.instill.peakBytes !== null) expect(r.instill.peakBytes).toBeGreaterThan(0);
    const ops = r.profile!.ops;
    // per layer: q, k, v and gate, up as two lora_group ops (the model's one path; on the CPU each runs its
    // members' lora_linear), o and down as lora_linear: every adapter's dA once
    const calls = (op: string) => ops.find((o) => o.op === op)?.calls ?? 0;
    expect(calls('lora_group_forward')).toBe(2 * 2);
    expect(calls('lora_linear_forward')).toBe(2 * 2);
    expect(calls('lora_group_backward')).toBe(2 * 2);
    expect(calls('lora_linear_backward/dA = s g^T x') + calls('lora_group_backward/dA = s g^T x')).toBe(2 * 7);
  });

  it('refuses an unknown --device and names why a known one is unavailable', async () => {
    await expect(run(['train', '--config', tinyConfig(), '--device', 'tpu'])).rejects.toMatchObject({ code: 'E_ARG' });
    if (!runtime.info().devices.includes('cuda')) {
      await expect(run(['train', '--config', tinyConfig(), '--device', 'cuda'])).rejects.toMatchObject({
        code: 'E_DEVICE',
        message: expect.stringContaining("device 'cuda' is not available"),
      });
    }
  });
});
