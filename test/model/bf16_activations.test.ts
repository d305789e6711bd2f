// bf16 activations (INSTILL_BF16_ACTIVATIONS=1: the norm outputs xn1, xn2, the MLP's gate, up, h, the
// attention's q, k, v and output, and their gradients in bf16; =mlp: all but the attention's; =0: f32; unset: 1 on
// a GPU, where runs 14 and 15 timed it faster, and 0 on the CPU; the same model code on the CPU here): the bf16 stories260K model with LoRA on every linear stays within bf16 tolerance of its
// f32-activation pass, the switch really changes the pass, it stays off where a linear has no adapter, and it
// works with dropout. test/cuda/lora_reference.test.ts runs it on CUDA.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LORA_TARGETS, loadModel, type Model } from '../../src/model/model.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { relNorm, tokenRows } from '../helpers/compare.js';
import { withEnv } from '../helpers/env.js';
import { base, cleanupTinyModels, writeModel } from './helpers/tiny_model.js';
import { fixturePath, haveFixture } from '../helpers/fixtures.js';

const REF = 'stories260K/lora_reference.safetensors';
const sameBits = (a: Record<string, Float32Array>, b: Record<string, Float32Array>) =>
  Object.keys(a).every((n) => a[n].every((v, i) => Object.is(v, b[n][i])));

describe.skipIf(!haveFixture(REF))('bf16 activations (INSTILL_BF16_ACTIVATIONS)', () => {
  let ref: SafetensorsFile;
  let inputIds: number[][], labels: number[][];
  let names: string[];
  let init: Record<string, Float32Array>;

  async function bf16Model(targetModules: (typeof LORA_TARGETS)[number][], dropout = 0): Promise<Model> {
    const m = await loadModel(fixturePath('stories260K'), { dtype: 'bf16' });
    m.addLora({ r: Number(ref.metadata.lora_r), alpha: Number(ref.metadata.lora_alpha), targetModules, dropout });
    const w: Record<string, Float32Array> = {};
    for (const n of Object.keys(m.adapterWeights())) w[n] = init[n];
    m.setAdapterWeights(w);
    return m;
  }
  // A fixed dropout seed: without one each call draws new masks.
  const grads = (m: Model, mode: '0' | '1' | 'mlp') => withEnv('INSTILL_BF16_ACTIVATIONS', mode, () => m.lossAndGrads({ inputIds, labels }, { dropoutSeed: 7 }));

  beforeAll(() => {
    ref = SafetensorsFile.open(fixturePath(REF));
    const [B, T] = ref.info('input_ids').shape;
    inputIds = tokenRows(ref.readArray('input_ids') as BigInt64Array, B, T);
    labels = tokenRows(ref.readArray('labels') as BigInt64Array, B, T);
    names = ref.names().filter((n) => n.endsWith('.weight') && n.startsWith('base_model.'));
    init = {};
    for (const n of names) init[n] = ref.readArray(n) as Float32Array;
  });

  // The bf16-weight model is not the reference's f32 model (its weights are rounded: 2.7e-2 apart in
  // gradients already), so the yardstick is the same model with f32 activations, whose f32 math is within
  // ~5e-6 of float64 (the f32-weight model against the reference shows that). Each bf16 activation is an
  // 8-bit mantissa, and the errors compound over 5 layers of a model this small (head dim 8, sums over few
  // tokens). Measured by ISA, ‖g − g32‖/‖g32‖ of the worst tensor / the mean, loss:
  //   mlp (xn1, xn2, gate, up, h, dh, dgate, dup):  1.6–2.4% / 1.0–1.3%, ≤ 7e-4
  //   1 (also q, k, v, the attention output, their gradients):  5.3–5.6% / 2.7–2.8%, ≤ 2.1e-3
  // as bf16 autocast would; on a GPU less, where the products (and the flash kernels' q, k, v, dO) are
  // rounded to bf16 with f32 activations too. The bounds below leave ~1.4x of that.
  it.each([
    { mode: 'mlp' as const, worst: 3.5e-2, mean: 1.8e-2, loss: 1e-3 },
    { mode: '1' as const, worst: 8e-2, mean: 4e-2, loss: 3e-3 },
  ])('INSTILL_BF16_ACTIVATIONS=$mode: every LoRA gradient within bf16 tolerance of the f32-activation pass, and not the same pass', async ({ mode, worst: bound, mean, loss }) => {
    const m = await bf16Model([...LORA_TARGETS]);
    const on = await grads(m, mode), off = await grads(m, '0');
    expect(Math.abs(on.loss - off.loss) / off.loss).toBeLessThan(loss);
    let worst = 0, sum = 0;
    for (const n of names) {
      const e = relNorm(on.grads[n], off.grads[n]);
      worst = Math.max(worst, e);
      sum += e;
      expect(e, n).toBeLessThan(bound);
    }
    expect(sum / names.length).toBeLessThan(mean);
    console.log(`bf16 activations (${mode}) on the CPU against f32: loss rel ${(Math.abs(on.loss - off.loss) / off.loss).toExponential(2)}, ` +
      `grads ‖g − g32‖/‖g32‖ worst ${worst.toExponential(2)}, mean ${(sum / names.length).toExponential(2)}`);
    expect(sameBits(on.grads, off.grads)).toBe(false);  // the switch changed the pass
    if (mode === '1') expect(sameBits(on.grads, (await grads(m, 'mlp')).grads)).toBe(false);  // and the levels differ
    // checkpointing recomputes the same bf16 activations
    m.setGradientCheckpointing(true);
    const ck = await grads(m, mode);
    m.setGradientCheckpointing(false);
    expect(ck.loss).toBe(on.loss);
    expect(sameBits(ck.grads, on.grads)).toBe(true);
  });

  it('unset is the f32 pass on the CPU (bf16 is the GPU\'s default), and a value it does not know is an error', async () => {
    const m = await bf16Model([...LORA_TARGETS]);
    const unset = await withEnv('INSTILL_BF16_ACTIVATIONS', undefined, () => m.lossAndGrads({ inputIds, labels }, { dropoutSeed: 7 }));
    const off = await grads(m, '0');
    expect(unset.loss).toBe(off.loss);
    expect(sameBits(unset.grads, off.grads)).toBe(true);
    for (const bad of ['true', 'bf16', 'yes']) {
      await expect(withEnv('INSTILL_BF16_ACTIVATIONS', bad, () => m.lossAndGrads({ inputIds, labels })), bad)
        .rejects.toMatchObject({ code: 'E_ARG', message: expect.stringContaining(`INSTILL_BF16_ACTIVATIONS='${bad}'`) });
    }
    // the model is still usable after the refused pass
    expect((await grads(m, '0')).loss).toBe(off.loss);
  });

  it('model.setActivations: a set mode wins over INSTILL_BF16_ACTIVATIONS, auto follows it; model.activations says which dtype a pass keeps', async () => {
    const m = await bf16Model([...LORA_TARGETS]);
    const pass = () => m.lossAndGrads({ inputIds, labels }, { dropoutSeed: 7 });
    expect(m.activations).toEqual({ mode: 'auto', dtype: 'f32' });  // the CPU's default
    const [on, off, mlp] = [await grads(m, '1'), await grads(m, '0'), await grads(m, 'mlp')];
    m.setActivations('bf16');
    expect(m.activations).toEqual({ mode: 'bf16', dtype: 'bf16' });
    const set = await withEnv('INSTILL_BF16_ACTIVATIONS', '0', pass);  // the set mode wins over the variable
    expect(sameBits(set.grads, on.grads)).toBe(true);
    m.setActivations('bf16-mlp');
    expect(sameBits((await withEnv('INSTILL_BF16_ACTIVATIONS', '1', pass)).grads, mlp.grads)).toBe(true);
    m.setActivations('f32');
    expect(m.activations.dtype).toBe('f32');
    expect(sameBits((await withEnv('INSTILL_BF16_ACTIVATIONS', '1', pass)).grads, off.grads)).toBe(true);
    m.setActivations('auto');
    expect(withEnv('INSTILL_BF16_ACTIVATIONS', '1', () => m.activations)).toEqual({ mode: 'auto', dtype: 'bf16' });
    expect(() => m.setActivations('fp8' as never)).toThrow(expect.objectContaining({ code: 'E_ARG' }));
    // bf16 applies only where every linear is adapted over bf16 weights
    const partial = await bf16Model(['q_proj', 'v_proj']);
    partial.setActivations('bf16');
    expect(partial.activations).toEqual({ mode: 'bf16', dtype: 'f32' });
  });

  it('stays f32 where a linear has no adapter; with dropout the adapters compute on f32 copies', async () => {
    const partial = await bf16Model(['q_proj', 'v_proj', 'gate_proj', 'up_proj']);
    const a = await grads(partial, '1'), b = await grads(partial, '0');
    expect(a.loss).toBe(b.loss);
    expect(sameBits(a.grads, b.grads)).toBe(true);
    // dropout (lora_dropout): the pass is a bf16-activation pass too, as near the f32 one as without dropout
    const dropped = await bf16Model([...LORA_TARGETS], 0.1);
    const c = await grads(dropped, '1'), d = await grads(dropped, '0');
    expect(Math.abs(c.loss - d.loss) / d.loss).toBeLessThan(3e-3);
    let sum = 0;
    for (const n of names) sum += relNorm(c.grads[n], d.grads[n]);
    expect(sum / names.length).toBeLessThan(4e-2);
    expect(sameBits(c.grads, d.grads)).toBe(false);
    const again = await grads(dropped, '1');  // the same seed, the same masks, the same bits
    expect(sameBits(again.grads, c.grads)).toBe(true);
  });
});

// Every architecture the model supports, tiny and random, in bf16 with LoRA on every linear and two packed rows:
// the bf16-activation passes run (q/k/v bias, Qwen3's q/k norm, sliding windows, GQA and MHA), stay near the
// f32-activation pass, and Qwen3 keeps its attention's activations f32 (its q/k norm's backward takes f32).
describe('bf16 activations across architectures', () => {
  afterAll(() => cleanupTinyModels());
  const archs: Array<[string, Record<string, unknown>]> = [
    ['qwen2 (q/k/v bias)', { ...base, model_type: 'qwen2', tie_word_embeddings: true, use_sliding_window: false }],
    ['qwen3 (q/k norm)', { ...base, model_type: 'qwen3', head_dim: 16, tie_word_embeddings: false, attention_bias: false }],
    ['mistral (sliding window 5)', { ...base, model_type: 'mistral', tie_word_embeddings: false, sliding_window: 5 }],
    ['mistral (MHA)', { ...base, model_type: 'mistral', num_key_value_heads: 4, tie_word_embeddings: false, sliding_window: null }],
  ];
  it.each(archs)('%s', async (name, config) => {
    const { dir } = writeModel(config, 21, false);
    const m = await loadModel(dir, { dtype: 'bf16' });
    m.addLora({ r: 2, alpha: 4, targetModules: [...LORA_TARGETS], seed: 5 });
    const aw = m.adapterWeights();
    for (const n of Object.keys(aw)) if (n.includes('lora_B')) aw[n] = aw[n].map((_, i) => 0.1 * Math.sin(i + n.length));
    m.setAdapterWeights(aw);
    const batch = { inputIds: [[3, 17, 42, 5, 63, 0, 9, 28], [28, 11, 50, 7, 1, 2, 3, 4]], labels: [[-100, 17, 42, 5, 63, 0, 9, 28], [-100, -100, 50, 7, 1, 2, 3, 4]] };
    const run = (mode: '0' | '1' | 'mlp') => withEnv('INSTILL_BF16_ACTIVATIONS', mode, () => m.lossAndGrads(batch));
    const off = await run('0'), all = await run('1'), mlp = await run('mlp');
    for (const on of [all, mlp]) {
      expect(Math.abs(on.loss - off.loss) / off.loss, name).toBeLessThan(1e-2);
      let sum = 0;
      for (const n of Object.keys(off.grads)) sum += relNorm(on.grads[n], off.grads[n]);
      expect(sum / Object.keys(off.grads).length, name).toBeLessThan(6e-2);
    }
    expect(sameBits(all.grads, off.grads), name).toBe(false);
    expect(sameBits(all.grads, mlp.grads), name).toBe(name.startsWith('qwen3'));  // Qwen3: the attention's stay f32 in both
  });
});
