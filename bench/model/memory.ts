// Peak memory of one LoRA training step (forward + backward, then one AdamW step) of a
// real-shaped model with random weights, and the terms that explain it.
//
//   npx tsc -p tsconfig.json && node dist/bench/model/memory.js [--config FILE] [--batch 4] [--seq 512]
//        [--r 16] [--targets q_proj,k_proj,...] [--checkpointing] [--dtype f32|bf16]
//
// Peak = VmHWM (resident high-water mark) after resetting it through /proc/self/clear_refs right
// before the step, so it is the process's whole resident memory at its highest during the step
// (weights + adapters + activations + scratch + Node itself). Linux only.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { randomModel, LORA_TARGETS, type LoraTarget } from '../../src/model/model.js';
import { specFromConfig, type ModelSpec } from '../../src/model/config.js';
import { packageRoot } from '../../src/native.js';

function status(key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}
const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;

/** The engine's own accounting of what a step holds (bytes), from native/model/llama.cpp's buffers. */
export function expectedTerms(spec: ModelSpec, N: number, r: number, targets: readonly string[], checkpointing: boolean, weightBytes: number) {
  const { hiddenSize: C, intermediateSize: F, numLayers: L, numHeads: H, numKvHeads: KVH, headDim: D, vocabSize: V } = spec;
  const f = 4;
  const ins: Record<string, number> = { q_proj: C, k_proj: C, v_proj: C, o_proj: H * D, gate_proj: C, up_proj: C, down_proj: F };
  const outs: Record<string, number> = { q_proj: H * D, k_proj: KVH * D, v_proj: KVH * D, o_proj: C, gate_proj: F, up_proj: F, down_proj: C };
  const linearParams = L * (C * H * D * 2 + 2 * C * KVH * D + 3 * C * F) + (spec.qkvBias ? L * (H + 2 * KVH) * D : 0);
  const embedParams = V * C * (spec.tieWordEmbeddings ? 1 : 2);
  const normParams = (2 * L + 1) * C + (spec.qkNorm ? 2 * L * D : 0);
  const loraParams = L * targets.reduce((a, t) => a + r * (ins[t] + outs[t]), 0);
  // Saved per layer and token (floats): q, k, v, att, x2 (+ q/k pre-norm for Qwen3), gate, up, u per target, rstd1/2, lse.
  const perTokenLayer = H * D + 2 * KVH * D + H * D + C + 2 * F + targets.length * r + 2 + H + (spec.qkNorm ? (H + KVH) * (D + 1) : 0);
  // Shared by all layers, recomputed in the backward: xn1, xn2 (C each), h (F).
  const sharedPerToken = 2 * C + F;
  const layerInputs = (L + 1) * N * C * f; // xs[0..L]: each layer's input, kept in both modes
  const acts = ((checkpointing ? 1 : L) * perTokenLayer + sharedPerToken) * N * f;
  const scratch = N * (2 * C + 3 * F + 2 * H * D + 2 * KVH * D) * f + 3 * N * C * f; // backward scratch + dres, xf, dxf
  const ceChunk = Math.min(32 * 2 ** 20, N * V * f) * 2; // logits chunk and its gradient (linear_cross_entropy)
  return {
    frozenWeights: linearParams * weightBytes + embedParams * weightBytes + normParams * f,
    loraParamsAndGrads: 2 * loraParams * f,
    adamMoments: 2 * loraParams * f,
    layerInputs,
    savedActivations: acts,
    backwardScratch: scratch,
    crossEntropyChunk: ceChunk,
    loraParams,
    perTokenLayerFloats: perTokenLayer,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      config: { type: 'string', default: join(packageRoot, '..', 'shared', 'fixtures', 'configs', 'smollm2-135m.json') },
      batch: { type: 'string', default: '4' },
      seq: { type: 'string', default: '512' },
      r: { type: 'string', default: '16' },
      targets: { type: 'string', default: LORA_TARGETS.join(',') },
      checkpointing: { type: 'boolean', default: false },
      dtype: { type: 'string', default: 'f32' },
      json: { type: 'string' },
    },
  });
  const B = Number(values.batch), T = Number(values.seq), r = Number(values.r);
  const targets = values.targets!.split(',') as LoraTarget[];
  const config = JSON.parse(readFileSync(values.config!, 'utf8'));
  const spec = specFromConfig(config);
  const dtype = values.dtype as 'f32' | 'bf16';
  const rss0 = status('VmRSS');
  let t0 = performance.now();
  const model = randomModel(config, { dtype, seed: 1 });
  const tLoad = performance.now() - t0;
  model.addLora({ r, alpha: 2 * r, targetModules: targets, seed: 2 });
  // Non-zero B so that every gradient is exercised as in a real step.
  const w = model.adapterWeights();
  for (const n of Object.keys(w)) if (n.includes('lora_B')) w[n].fill(1e-3);
  model.setAdapterWeights(w);
  model.setGradientCheckpointing(values.checkpointing === true);
  const ids: number[][] = [];
  let s = 12345;
  for (let b = 0; b < B; b++) {
    const row: number[] = [];
    for (let t = 0; t < T; t++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      row.push(s % spec.vocabSize);
    }
    ids.push(row);
  }
  if (global.gc) global.gc();
  const rssBefore = status('VmRSS');
  writeFileSync('/proc/self/clear_refs', '5');
  t0 = performance.now();
  const res = await model.lossAndGrads({ inputIds: ids, labels: ids }, { returnGrads: false });
  const tStep = performance.now() - t0;
  model.adamwStep({ lr: 1e-4 });
  const peak = status('VmHWM');
  const terms = expectedTerms(spec, B * T, r, targets, values.checkpointing === true, dtype === 'f32' ? 4 : 2);
  const report = {
    config: values.config,
    batch: B, seq: T, r, targets, dtype, checkpointing: values.checkpointing === true,
    loss: res.loss, tokens: res.tokens,
    seconds: { buildRandomWeights: tLoad / 1000, lossAndGrads: tStep / 1000 },
    rss: { nodeBaseline: rss0, beforeStep: rssBefore, peakDuringStep: peak, stepIncrease: peak - rssBefore },
    expected: terms,
  };
  if (values.json) writeFileSync(values.json, JSON.stringify(report, null, 2));
  console.log(`${spec.modelType} ${values.config}: batch ${B} x seq ${T}, LoRA r=${r} on ${targets.join(',')}, weights ${dtype}, checkpointing ${report.checkpointing}`);
  console.log(`loss ${res.loss.toFixed(4)} over ${res.tokens} tokens; step ${(tStep / 1000).toFixed(1)} s`);
  console.log(`RSS: node baseline ${mib(rss0)}, before step ${mib(rssBefore)}, PEAK during step ${mib(peak)} (+${mib(peak - rssBefore)})`);
  console.log('expected terms:');
  for (const [k, v] of Object.entries(terms)) if (k !== 'loraParams' && k !== 'perTokenLayerFloats') console.log(`  ${k.padEnd(20)} ${mib(v)}`);
  const sum = Object.entries(terms).filter(([k]) => !['loraParams', 'perTokenLayerFloats'].includes(k)).reduce((a, [, v]) => a + v, 0);
  console.log(`  ${'sum'.padEnd(20)} ${mib(sum)} (+ node baseline ${mib(rss0)} = ${mib(sum + rss0)})`);
}

await main();
