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
    // the step's arithmetic (src/model/flops.ts; test/model/flops.test.ts checks the count): its rate, and no MFU
    // on the CPU without a peak
    const C = 48, qo = 48, kv = 24, F = 88, L = 2;
    expect(r.flops.frozenParams).toBe(L * (C * qo * 2 + C * kv * 2 + C * F * 3 + 2 * C) + C + 301 * C);
    expect(r.flops.loraParams).toBe(L * 4 * ((C + qo) * 2 + (C + kv) * 2 + (C + F) * 3));
    expect(r.flops.perToken).toBe(4 * r.flops.frozenParams + 6 * r.flops.loraParams + 6 * L * 24 * qo);
    expect(r.flops.instillTflops).toBeCloseTo((r.instill.tokensPerSec * r.flops.perToken) / 1e12, 12);
    expect(r.flops.peak).toBeNull();
    expect(r.flops.instillMfu).toBeNull();
  });

  it('--peak-tflops gives the MFU, printed beside tokens/s; a peak that is no positive number is refused', async () => {
    const lines: string[] = [];
    const log = console.log;
    console.log = (...a: unknown[]) => void lines.push(a.join(' '));
    try {
      expect(await run(['train', '--config', tinyConfig(), '--batch', '1', '--seq', '16', '--steps', '1', '--peak-tflops', '0.5'])).toBe(0);
    } finally {
      console.log = log;
    }
    const out = lines.join('\n');
    expect(out).toMatch(/model TFLOP\/s +MFU/);
    expect(out).toContain('MFU: of 0.5 TFLOP/s (--peak-tflops)');
    const row = out.split('\n').find((l) => l.startsWith('instill '))!.trim().split(/ +/);
    // instill, tokens/s, ms/step, model TFLOP/s, MFU, ...: the MFU is the rate over the peak
    const [rate, share] = [Number(row[3]), Number(row[4].replace('%', ''))];
    expect(rate).toBeGreaterThan(0);
    expect(Math.abs(share / ((100 * rate) / 0.5) - 1)).toBeLessThan(0.02);  // (each printed to 2-3 digits)
    await expect(run(['train', '--config', tinyConfig(), '--peak-tflops', '0'])).rejects.toMatchObject({ code: 'E_ARG' });
    await expect(run(['train', '--config', tinyConfig(), '--peak-tflops', 'fast'])).rejects.toMatchObject({ code: 'E_ARG' });
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
