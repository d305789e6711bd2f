// src/model/flops.ts: a LoRA step's FLOPs as MFU counts them, and the GPUs whose dense bf16 peak it knows. The
// parameter counts are checked against the numbers the models' own libraries print for them (transformers' total
// for Llama-3.2-1B and Qwen2.5-0.5B, both tied, so every weight but the embedding's lookup, which is the head;
// PEFT's "trainable params" for r 16 on all seven projections of Llama-3.2-1B), the attention term by summing
// over a row's positions.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

import { specFromConfig, type ModelSpec } from '../../src/model/config.js';
import { gpuPeakTflops, loraStepFlops } from '../../src/model/flops.js';
import { fixturePath, haveFixture } from '../helpers/fixtures.js';

const spec = (name: string): ModelSpec => specFromConfig(JSON.parse(readFileSync(fixturePath(`configs/${name}.json`), 'utf8')));

describe.skipIf(!haveFixture('configs'))('loraStepFlops', () => {
  it('Llama-3.2-1B: its 1,235,814,400 weights, PEFT\'s 11,272,192 at r 16, and 4 · frozen + 6 · LoRA + 6 · L · T · d a token', () => {
    const s = spec('llama-3.2-1b');
    const f = loraStepFlops(s, { rank: 16 }, 2048);
    expect(f.frozenParams).toBe(1_235_814_400);
    expect(f.loraParams).toBe(11_272_192);
    expect(f.perToken).toBe(4 * 1_235_814_400 + 6 * 11_272_192 + 6 * 16 * 2048 * 2048);
    // fewer targets, fewer LoRA parameters: q and v alone (PEFT's default for Llama), r 8
    const qv = loraStepFlops(s, { rank: 8, targets: ['q_proj', 'v_proj'] }, 2048);
    expect(qv.loraParams).toBe(16 * 8 * ((2048 + 2048) + (2048 + 512)));
    expect(qv.frozenParams).toBe(f.frozenParams);
  });

  it('Qwen2.5-0.5B (q/k/v biases, tied head): its 494,032,768 weights', () => {
    expect(loraStepFlops(spec('qwen2.5-0.5b'), { rank: 16 }, 512).frozenParams).toBe(494_032_768);
  });

  it('a sliding window shorter than the row: the keys each position sees, summed', () => {
    const s = { ...spec('llama-3.2-1b'), slidingWindow: 300 };
    const seq = 1000;
    let keys = 0;
    for (let i = 0; i < seq; i++) keys += Math.min(i + 1, 300);
    const base = loraStepFlops({ ...s, slidingWindow: null }, { rank: 16 }, seq);
    const windowed = loraStepFlops(s, { rank: 16 }, seq);
    const attention = (f: typeof base) => f.perToken - 4 * f.frozenParams - 6 * f.loraParams;
    expect(attention(windowed)).toBeCloseTo(12 * 16 * 2048 * (keys / seq), 0);
    expect(attention(base)).toBe(6 * 16 * seq * 2048);  // no window: seq / 2 keys, the convention
    // a window as long as the row changes nothing
    expect(loraStepFlops({ ...s, slidingWindow: seq }, { rank: 16 }, seq).perToken).toBe(base.perToken);
  });
});

describe('gpuPeakTflops', () => {
  it('the data-center GPUs by the names their drivers report; none for the rest', () => {
    expect(gpuPeakTflops('NVIDIA H100 80GB HBM3')).toBe(989);
    expect(gpuPeakTflops('NVIDIA H100 PCIe')).toBe(756);
    expect(gpuPeakTflops('NVIDIA H100 NVL')).toBe(835);
    expect(gpuPeakTflops('NVIDIA H200')).toBe(989);
    expect(gpuPeakTflops('NVIDIA H200 NVL')).toBe(835);
    expect(gpuPeakTflops('NVIDIA GH200 480GB')).toBe(989);
    expect(gpuPeakTflops('NVIDIA A100-SXM4-80GB')).toBe(312);
    expect(gpuPeakTflops('NVIDIA L40S')).toBe(362);
    expect(gpuPeakTflops('NVIDIA B200')).toBe(2250);
    expect(gpuPeakTflops('NVIDIA GeForce RTX 4090')).toBeNull();
    expect(gpuPeakTflops('NVIDIA L4')).toBeNull();
  });
});
