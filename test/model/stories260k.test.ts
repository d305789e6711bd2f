// stories260K against reference.json (llama2.c run.c / model.py): logits of the first
// positions within 1e-4, mean cross-entropy, and the 100-token greedy continuation exactly.
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type Model } from '../../src/model/model.js';
import { fixturePath, haveFixture } from '../helpers/fixtures.js';

interface RefSeq {
  name: string;
  ids: number[];
  logits_first_5_positions: number[][];
  argmax_all_positions: number[];
  mean_ce: number;
  mean_ce_hf_f64: number;
  num_predictions: number;
}
interface Ref {
  prompt_ids: number[];
  greedy_ids: number[];
  bos_prompt_ids: number[];
  bos_greedy_ids: number[];
  prompt_text: string;
  sequences: RefSeq[];
  mean_ce: number;
}

describe.skipIf(!haveFixture('stories260K/model.safetensors'))('stories260K reference', () => {
  let model: Model;
  let ref: Ref;
  beforeAll(async () => {
    model = await loadModel(fixturePath('stories260K'));
    ref = JSON.parse(readFileSync(fixturePath('stories260K/reference.json'), 'utf8')) as Ref;
  });

  it('reads the config into a spec', () => {
    expect(model.spec).toMatchObject({ modelType: 'llama', hiddenSize: 64, numLayers: 5, numHeads: 8, numKvHeads: 4, headDim: 8, vocabSize: 512, tieWordEmbeddings: true });
  });

  it('logits of the first positions match within 1e-4, argmax everywhere', async () => {
    for (const s of ref.sequences) {
      const logits = await model.logits([s.ids]);
      expect(logits.shape).toEqual([1, s.ids.length, 512]);
      const data = logits.toArray() as Float32Array;
      let maxDiff = 0;
      s.logits_first_5_positions.forEach((row, t) => {
        row.forEach((v, j) => (maxDiff = Math.max(maxDiff, Math.abs(data[t * 512 + j] - v))));
      });
      expect(maxDiff, s.name).toBeLessThan(1e-4);
      const am: number[] = [];
      for (let t = 0; t < s.ids.length; t++) {
        let best = 0;
        for (let j = 1; j < 512; j++) if (data[t * 512 + j] > data[t * 512 + best]) best = j;
        am.push(best);
      }
      expect(am, s.name).toEqual(s.argmax_all_positions);
    }
  });

  it('mean cross-entropy per sequence and overall (token-weighted)', async () => {
    let sum = 0;
    let count = 0;
    for (const s of ref.sequences) {
      const r = await model.lossAndGrads({ inputIds: [s.ids], labels: [s.ids] });
      expect(r.tokens).toBe(s.num_predictions);
      expect(Math.abs(r.loss - s.mean_ce_hf_f64), s.name).toBeLessThan(1e-5);
      sum += r.loss * r.tokens;
      count += r.tokens;
    }
    expect(Math.abs(sum / count - ref.mean_ce)).toBeLessThan(1e-5);
  });

  it('greedy continuation of "Once upon a time" (100 tokens) is exact', async () => {
    const r = await model.generate(ref.prompt_ids, { maxNewTokens: 100 }); // defaults: greedy, stop at EOS (never produced here)
    expect(r.ids).toEqual(ref.greedy_ids);
    const fromText = await model.generate(ref.prompt_text, { maxNewTokens: 100 });
    expect(fromText.ids).toEqual(ref.greedy_ids);
    const fromBos = await model.generate(ref.bos_prompt_ids, { maxNewTokens: ref.bos_greedy_ids.length, stopTokenIds: [] });
    expect(fromBos.ids).toEqual(ref.bos_greedy_ids);
  });

  it('a text prompt goes through the folder tokenizer', async () => {
    const r = await model.generate(ref.prompt_text, { maxNewTokens: 20, stopTokenIds: [] });
    expect(r.ids).toEqual(ref.greedy_ids.slice(0, 20));
    expect(r.text).toMatch(/^, there was a little girl named Lily/);
    const words = await model.generate([1, 403, 407], { maxNewTokens: 3, stopTokenIds: [] }); // "Once upon" -> " a time,"
    expect(words.text).toMatch(/^ a time/);
  });
});
