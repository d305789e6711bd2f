// Packed rows: three examples in one row (positions restart, attention stops at example
// boundaries, the last token of an example predicts nothing) give the same loss, gradients and
// logits as the three examples run one by one. Also: gradient checkpointing changes nothing.
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type Model } from '../../src/model/model.js';
import { fixturePath, haveFixture } from '../helpers/fixtures.js';
import { relError } from '../helpers/compare.js';

const examples = [
  { ids: [1, 403, 407, 261, 378, 432, 383], labels: [-100, -100, -100, 261, 378, 432, 383] },
  { ids: [1, 338, 401, 396, 267, 337, 410, 408, 419, 292, 411], labels: [-100, -100, 401, 396, 267, 337, 410, 408, 419, 292, 411] },
  { ids: [1, 426, 385, 328, 432, 358, 394, 261, 370], labels: [-100, 426, 385, 328, 432, 358, 394, -100, 370] },
];

describe.skipIf(!haveFixture('stories260K/model.safetensors'))('packed batches', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(fixturePath('stories260K'));
    model.addLora({ r: 4, alpha: 8, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], seed: 7 });
    const w = model.adapterWeights();
    for (const n of Object.keys(w)) if (n.includes('lora_B')) w[n] = w[n].map((_, i) => 0.02 * Math.cos(3 * i + n.length));
    model.setAdapterWeights(w);
  });

  function packedRow(T: number) {
    const inputIds: number[] = [], labels: number[] = [], segmentIds: number[] = [];
    examples.forEach((e, k) => {
      inputIds.push(...e.ids);
      labels.push(...e.labels);
      segmentIds.push(...e.ids.map(() => k + 1));
    });
    while (inputIds.length < T) {
      inputIds.push(0);
      labels.push(-100);
      segmentIds.push(0);
    }
    return { inputIds: [inputIds], labels: [labels], segmentIds: [segmentIds] };
  }

  it('a negative position is E_RANGE, checked on the host copy of the inputs (no device read back on a GPU)', async () => {
    const inputIds = [[1, 403, 407, 261]], labels = [[-100, 403, 407, 261]];
    await expect(model.lossAndGrads({ inputIds, labels, positions: [[0, 1, -2, 3]] }))
      .rejects.toMatchObject({ code: 'E_RANGE', message: expect.stringMatching(/position -2 at index 2 is negative/) });
    expect((await model.lossAndGrads({ inputIds, labels, positions: [[0, 1, 2, 3]] })).tokens).toBe(3);
  });

  it('loss and every gradient equal the examples run one by one', async () => {
    const packed = await model.lossAndGrads(packedRow(32));
    const total = examples.reduce((a, e) => a + e.labels.slice(1).filter((l) => l !== -100).length, 0);
    expect(packed.tokens).toBe(total);
    let lossSum = 0;
    let first = true;
    let grads: Record<string, Float32Array> = {};
    for (const e of examples) {
      // normalizer = the packed row's target count, accumulated: the sum is the packed gradient.
      const r = await model.lossAndGrads({ inputIds: [e.ids], labels: [e.labels] }, { normalizer: total, accumulate: !first });
      first = false;
      lossSum += r.loss;
      grads = r.grads;
    }
    expect(Math.abs(lossSum - packed.loss) / packed.loss).toBeLessThan(1e-6);
    const names = Object.keys(packed.grads);
    expect(names.length).toBe(70);
    for (const n of names) expect(relError(grads[n], packed.grads[n]), n).toBeLessThan(1e-5);
  });

  it('a packed row is not the same as an unpacked one (the test can fail)', async () => {
    const row = packedRow(32);
    const unpacked = await model.lossAndGrads({ inputIds: row.inputIds, targets: undefined, labels: row.labels });
    const packed = await model.lossAndGrads(row);
    expect(Math.abs(unpacked.loss - packed.loss)).toBeGreaterThan(1e-3);
  });

  it('logits of each example inside the packed row equal its logits alone', async () => {
    const row = packedRow(32);
    const lp = (await model.logits(row.inputIds, { segmentIds: row.segmentIds })).toArray() as Float32Array;
    let off = 0;
    for (const e of examples) {
      const l1 = (await model.logits([e.ids])).toArray() as Float32Array;
      const slice = lp.subarray(off * 512, (off + e.ids.length) * 512);
      expect(relError(slice, l1)).toBeLessThan(1e-5);
      off += e.ids.length;
    }
  });

  it('gradient checkpointing gives the same loss and gradients', async () => {
    const row = packedRow(32);
    const plain = await model.lossAndGrads(row);
    model.setGradientCheckpointing(true);
    try {
      const ckpt = await model.lossAndGrads(row);
      expect(ckpt.loss).toBe(plain.loss);
      for (const n of Object.keys(plain.grads)) expect(relError(ckpt.grads[n], plain.grads[n]), n).toBeLessThan(1e-6);
    } finally {
      model.setGradientCheckpointing(false);
    }
  });

  it('several rows in a batch equal the rows run alone', async () => {
    const a = examples[1], b = examples[2];
    const T = 11;
    const pad = (x: number[], v: number) => [...x, ...Array(T - x.length).fill(v)];
    const batch = await model.lossAndGrads({ inputIds: [pad(a.ids, 0), pad(b.ids, 0)], labels: [pad(a.labels, -100), pad(b.labels, -100)] });
    const total = batch.tokens;
    const ra = await model.lossAndGrads({ inputIds: [a.ids], labels: [a.labels] }, { normalizer: total });
    const rb = await model.lossAndGrads({ inputIds: [b.ids], labels: [b.labels] }, { normalizer: total, accumulate: true });
    expect(Math.abs(ra.loss + rb.loss - batch.loss)).toBeLessThan(1e-6);
    for (const n of Object.keys(batch.grads)) expect(relError(rb.grads[n], batch.grads[n]), n).toBeLessThan(1e-5);
  });
});

describe.skipIf(!haveFixture('stories260K/model.safetensors'))('batches from the data layer and attention masks', () => {
  it('a src/data Batch (packed, with targets and labels) is taken as it is', async () => {
    const { assembleBatch } = await import('../../src/data/batch.js');
    const model = await loadModel(fixturePath('stories260K'));
    model.addLora({ r: 2, alpha: 4, targetModules: ['v_proj', 'up_proj'], seed: 4 });
    const w = model.adapterWeights();
    for (const n of Object.keys(w)) if (n.includes('lora_B')) w[n] = w[n].map((_, i) => 0.03 * Math.sin(i));
    model.setAdapterWeights(w);
    const source = {
      ids: (i: number) => Int32Array.from(examples[i].ids),
      mask: (i: number) => Uint8Array.from(examples[i].labels, (l) => (l === -100 ? 0 : 1)),
      length: (i: number) => examples[i].ids.length,
    };
    const batch = assembleBatch(source, [[0, 1], [2]], 24, 0);
    const viaBatch = await model.lossAndGrads(batch);
    expect(viaBatch.tokens).toBe(batch.numTargets);
    // the same rows through Hugging Face labels + segment ids
    const viaLabels = await model.lossAndGrads({ inputIds: batch.inputIds, labels: batch.labels, segmentIds: batch.segmentIds, batchSize: 2, seqLen: 24 });
    expect(viaLabels.tokens).toBe(viaBatch.tokens);
    expect(Math.abs(viaLabels.loss - viaBatch.loss)).toBeLessThan(1e-7);
    for (const n of Object.keys(viaBatch.grads)) expect(relError(viaLabels.grads[n], viaBatch.grads[n])).toBeLessThan(1e-7);
  });

  it('left padding with an attention mask equals the unpadded sequence', async () => {
    const model = await loadModel(fixturePath('stories260K'));
    const e = examples[1];
    const pad = 5;
    const ids = [...Array(pad).fill(0), ...e.ids];
    const labels = [...Array(pad).fill(-100), ...e.labels];
    const mask = [...Array(pad).fill(0), ...e.ids.map(() => 1)];
    const padded = await model.lossAndGrads({ inputIds: [ids], labels: [labels], attentionMask: [mask] });
    const plain = await model.lossAndGrads({ inputIds: [e.ids], labels: [e.labels] });
    expect(padded.tokens).toBe(plain.tokens);
    expect(Math.abs(padded.loss - plain.loss)).toBeLessThan(1e-5);
    const noMask = await model.lossAndGrads({ inputIds: [ids], labels: [labels] });
    expect(Math.abs(noMask.loss - plain.loss)).toBeGreaterThan(1e-4);
  });
});

describe('segment boundaries handed to the engine directly', () => {
  it('a cu_seqlens that does not cut [0, N) into segments is E_ARG before any work', async () => {
    const { randomModel } = await import('../../src/index.js');
    const { Tensor, handleOf } = await import('../../src/tensor.js');
    const model = randomModel({ model_type: 'llama', vocab_size: 64, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 }, { seed: 1 });
    model.addLora({ r: 2 });
    const handle = (model as unknown as { handle: import('../../src/native.js').ModelHandle }).handle;
    const i32 = (v: number[]) => handleOf(Tensor.from(Int32Array.from(v), [v.length], { dtype: 'i32' }));
    const ids = i32([1, 2, 3, 4]), pos = i32([0, 1, 0, 1]), targets = i32([2, -100, 4, -100]);
    for (const [cu, why] of [[[0, 2, 9], /end at N = 4/], [[1, 4], /start at 0/], [[0, 3, 2, 4], /must not decrease/]] as const) {
      await expect(handle.lossAndGrads(ids, pos, i32([...cu]), targets, 0, false, 0)).rejects.toThrow(why);
    }
    expect((await handle.lossAndGrads(ids, pos, i32([0, 2, 4]), targets, 0, false, 0)).count).toBe(2);
  });
});
