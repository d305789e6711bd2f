// The model's LoRA loss and gradients on device 'cuda' against
// stories260K/lora_reference.safetensors (float64 PyTorch): loss within 1e-2
// relative, every gradient tensor within 1e-2 in ‖g − ref‖ / ‖ref‖ (bf16
// tolerance: the CUDA products round operands to bf16; the element-wise worst
// case, max |g − ref| / max |ref|, is printed and held under 5e-2), one AdamW step on the GPU,
// and the GPU model against the CPU model (LoRA and full fine-tuning). Runs only where
// runtime.info().devices has 'cuda' (bench/gpu-check.sh); skipped elsewhere.
import { beforeAll, describe, expect, it } from 'vitest';

import { runtime } from '../../src/index.js';
import { LORA_TARGETS, loadModel, randomModel, type Model } from '../../src/model/model.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { native } from '../../src/native.js';
import { fixturePath, haveFixture } from '../helpers/fixtures.js';
import { relError, relNorm, tokenRows } from '../helpers/compare.js';
import { withEnv } from '../helpers/env.js';
import { withOpProfile } from '../helpers/profile.js';
import { clipGradNorm, ReferenceAdamW } from '../train/helpers/reference_optimizer.js';

const REF = 'stories260K/lora_reference.safetensors';
const hasCuda = runtime.info().devices.includes('cuda');
if (!hasCuda) console.warn(`skipping test/cuda/lora_reference: ${native().deviceUnavailableReason('cuda')}`);

describe.skipIf(!hasCuda || !haveFixture(REF))('LoRA reference on CUDA', () => {
  let gpu: Model, cpu: Model;
  let ref: SafetensorsFile;
  let names: string[];
  let inputIds: number[][], labels: number[][];

  beforeAll(async () => {
    ref = SafetensorsFile.open(fixturePath(REF));
    const md = ref.metadata;
    const [B, T] = ref.info('input_ids').shape;
    inputIds = tokenRows(ref.readArray('input_ids') as BigInt64Array, B, T);
    labels = tokenRows(ref.readArray('labels') as BigInt64Array, B, T);
    const r = Number(md.lora_r), alpha = Number(md.lora_alpha);
    const scale = md.lora_scale !== undefined ? Number(md.lora_scale) : alpha / r;
    const rsLora = Math.abs(scale - alpha / Math.sqrt(r)) < 1e-9 && Math.abs(scale - alpha / r) > 1e-9;
    const targetModules = md.target_modules.split(',').map((t) => t.trim()) as (typeof LORA_TARGETS)[number][];
    names = ref.names().filter((n) => n.endsWith('.weight') && n.startsWith('base_model.'));
    const init: Record<string, Float32Array> = {};
    for (const n of names) init[n] = ref.readArray(n) as Float32Array;
    gpu = await loadModel(fixturePath('stories260K'), { device: 'cuda' });
    cpu = await loadModel(fixturePath('stories260K'));
    for (const m of [gpu, cpu]) {
      m.addLora({ r, alpha, rsLora, targetModules });
      m.setAdapterWeights(init);
    }
  });

  it('the model lives on the GPU', () => {
    expect(gpu.device).toBe('cuda');
    expect(cpu.device).toBe('cpu');
  });

  it('loss and every LoRA gradient within 1e-2 of the float64 reference; then one AdamW step', async () => {
    const out = await gpu.lossAndGrads({ inputIds, labels });
    const lossRef = Number(ref.metadata.loss_float64);
    expect(Math.abs(out.loss - lossRef) / lossRef).toBeLessThan(1e-2);
    let worst = 0, worstMax = 0;
    for (const n of names) {
      const want = ref.readArray(`${n}.grad`) as Float32Array;
      const e = relNorm(out.grads[n], want), em = relError(out.grads[n], want);
      worst = Math.max(worst, e);
      worstMax = Math.max(worstMax, em);
      expect(e, n).toBeLessThan(1e-2);
      expect(em, n).toBeLessThan(5e-2);
    }
    console.log(`LoRA reference on CUDA: loss rel err ${(Math.abs(out.loss - lossRef) / lossRef).toExponential(2)}, ` +
      `worst grad ‖g − ref‖/‖ref‖ ${worst.toExponential(2)}, worst max|g − ref|/max|ref| ${worstMax.toExponential(2)}`);
    // One AdamW step on the GPU against the closed form of AdamW's first step,
    // p·(1 − lr·wd) − lr·g/(|g| + eps), from the gradients the GPU returned.
    const before = gpu.adapterWeights();
    const opt = { lr: 1e-3, weightDecay: 0.01, eps: 1e-8 };
    gpu.adamwStep(opt);
    const after = gpu.adapterWeights();
    for (const n of names) {
      const g = out.grads[n], p = before[n], q = after[n];
      const want = new Float32Array(p.length);
      for (let i = 0; i < p.length; i++) want[i] = p[i] * (1 - opt.lr * opt.weightDecay) - (opt.lr * g[i]) / (Math.abs(g[i]) + opt.eps);
      expect(relError(q, want), n).toBeLessThan(1e-5);
    }
  });

  it('the same loss, gradients and logits as the CPU model (bf16 tolerance)', async () => {
    const init: Record<string, Float32Array> = {};
    for (const n of names) init[n] = ref.readArray(n) as Float32Array;
    gpu.setAdapterWeights(init);
    const g = await gpu.lossAndGrads({ inputIds, labels });
    const c = await cpu.lossAndGrads({ inputIds, labels });
    expect(g.tokens).toBe(c.tokens);
    expect(Math.abs(g.loss - c.loss) / c.loss).toBeLessThan(1e-2);
    for (const n of names) {
      expect(relNorm(g.grads[n], c.grads[n]), n).toBeLessThan(1e-2);
      expect(relError(g.grads[n], c.grads[n]), n).toBeLessThan(5e-2);
    }
    // accumulate: a second call with accumulate doubles the gradients
    const g2 = await gpu.lossAndGrads({ inputIds, labels }, { accumulate: true });
    for (const n of names) expect(relError(g2.grads[n], g.grads[n].map((x) => 2 * x)), n).toBeLessThan(1e-5);
    const fl = (await gpu.loss({ inputIds, labels })).loss;
    expect(Math.abs(fl - g.loss) / g.loss).toBeLessThan(1e-5);
    const lg = await gpu.logits(inputIds);
    const lc = await cpu.logits(inputIds);
    expect(lg.device).toBe('cpu');
    expect(lg.shape).toEqual(lc.shape);
    expect(relError(lg.toArray() as Float32Array, lc.toArray() as Float32Array)).toBeLessThan(2e-2);
  });

  it("the Trainer's optimizer step on the GPU (norm, clipping, AdamW, moments) follows the reference", async () => {
    // The optimizer alone is compared: each step's GPU gradients go through the TypeScript reference
    // (clip_grad_norm_, then AdamW in double). Comparing against the CPU model's own steps instead
    // compares two gradient paths as well (TF32 vs f32 products), and AdamW's first steps are
    // sign-like: an element whose gradient is near 0 on both may still move ±lr apart.
    const init: Record<string, Float32Array> = {};
    for (const n of names) init[n] = ref.readArray(n) as Float32Array;
    const h = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 0.5 };
    gpu.setAdapterWeights(init);
    gpu.setOptimizerState({ step: 0, m: {}, v: {} });
    const want: Record<string, Float32Array> = {};
    for (const n of names) want[n] = init[n].slice();
    const reference = new ReferenceAdamW();
    for (let s = 0; s < 3; s++) {
      const grads = (await gpu.lossAndGrads({ inputIds, labels })).grads;
      const host: Record<string, Float32Array> = {};
      for (const n of names) host[n] = grads[n].slice();
      const wantNorm = clipGradNorm(host, h.maxGradNorm);
      const ng = (await gpu.optimizerStep(h)).gradNorm;
      expect(Math.abs(ng - wantNorm) / wantNorm).toBeLessThan(1e-5);
      reference.update(want, host, h);
    }
    const wg = gpu.adapterWeights();
    for (const n of names) expect(relNorm(wg[n], want[n]), n).toBeLessThan(1e-5);
    const sg = gpu.optimizerState();
    expect(sg.step).toBe(3);
    for (const n of names) {
      expect(relNorm(sg.m[n], reference.m.get(n)!), n).toBeLessThan(1e-5);
      expect(relNorm(sg.v[n], reference.v.get(n)!), n).toBeLessThan(1e-5);
    }
    // the moments go back in: the same next step from a restored state
    const other = await loadModel(fixturePath('stories260K'), { device: 'cuda' });
    other.addLora({ r: Number(ref.metadata.lora_r), alpha: Number(ref.metadata.lora_alpha), targetModules: gpu.loraConfig!.targetModules, rsLora: gpu.loraConfig!.rsLora });
    other.setAdapterWeights(wg);
    other.setOptimizerState(sg);
    for (const m of [gpu, other]) {
      await m.lossAndGrads({ inputIds, labels }, { returnGrads: false });
      await m.optimizerStep(h);
    }
    const a = gpu.adapterWeights(), b = other.adapterWeights();
    for (const n of names) expect(b[n], n).toEqual(a[n]);
    other.dispose();
  });

  it('the op profile times GPU ops with queued events: every op of a step, its calls, device time', async () => {
    runtime.setOpProfile(true);
    try {
      await gpu.lossAndGrads({ inputIds, labels }, { returnGrads: false });
      const rows = runtime.opProfile();
      const by = Object.fromEntries(rows.map((r) => [r.op, r]));
      const L = gpu.spec.numLayers;
      expect(by.attention_forward?.calls).toBe(L);
      expect(by.attention_backward?.calls).toBe(L);
      expect(by.linear_cross_entropy?.calls).toBe(1);
      expect(by['attention_backward/delta = rowsum(dO * O)']?.calls).toBe(L);  // a part: inside its op
      for (const r of rows) {
        expect(r.device).toBe('cuda');
        if (r.op.includes('/')) expect(r.ms).toBeGreaterThanOrEqual(0);
        else expect(r.ms).toBeGreaterThan(0);
      }
      expect(runtime.opProfile()).toEqual([]); // read once: it starts over
    } finally {
      runtime.setOpProfile(false);
    }
  });

  it('full fine-tuning on the GPU: every weight gradient within bf16 tolerance of the CPU', async () => {
    const fg = await loadModel(fixturePath('stories260K'), { device: 'cuda', full: true });
    const fc = await loadModel(fixturePath('stories260K'), { full: true });
    const g = await fg.lossAndGrads({ inputIds, labels });
    const c = await fc.lossAndGrads({ inputIds, labels });
    expect(Math.abs(g.loss - c.loss) / c.loss).toBeLessThan(1e-2);
    const names = Object.keys(c.grads);
    expect(names.length).toBeGreaterThan(10);
    for (const n of names) {
      expect(relNorm(g.grads[n], c.grads[n]), n).toBeLessThan(2e-2);
      expect(relError(g.grads[n], c.grads[n]), n).toBeLessThan(5e-2);
    }
    fg.dispose();
    fc.dispose();
  });

  it('a bf16 model on the GPU: loss and gradients near the float64 reference (bf16 products; kernels: verified)', async () => {
    await withEnv('INSTILL_CUDA_NEXT', 'none', bf16ModelCase);
  });

  it('a bf16 model on the GPU: loss and gradients near the float64 reference (bf16 products; kernels: default, the promoted pieces)', async () => {
    await withEnv('INSTILL_CUDA_NEXT', undefined, bf16ModelCase);
  });

  /** stories260K in bf16 on `device` with the reference's adapter (its config and initial weights). */
  async function bf16LoraModel(device: 'cpu' | 'cuda' = 'cuda', dropout = 0): Promise<Model> {
    const init: Record<string, Float32Array> = {};
    for (const n of names) init[n] = ref.readArray(n) as Float32Array;
    const lc = gpu.loraConfig!;
    const m = await loadModel(fixturePath('stories260K'), { device, dtype: 'bf16' });
    m.addLora({ r: lc.r, alpha: lc.alpha, rsLora: lc.rsLora, targetModules: lc.targetModules, dropout });
    m.setAdapterWeights(init);
    return m;
  }

  async function bf16ModelCase(): Promise<void> {
    const m = await bf16LoraModel();
    const out = await m.lossAndGrads({ inputIds, labels });
    const lossRef = Number(ref.metadata.loss_float64);
    // The weights themselves are rounded to bf16 here (a different model than the reference's
    // f32 one), so this bounds gross errors only; the f32 model above is the precise check.
    expect(Math.abs(out.loss - lossRef) / lossRef).toBeLessThan(2e-2);
    let worst = 0;
    for (const n of names) worst = Math.max(worst, relNorm(out.grads[n], ref.readArray(`${n}.grad`) as Float32Array));
    console.log(`bf16 model on CUDA: loss rel err ${(Math.abs(out.loss - lossRef) / lossRef).toExponential(2)}, worst grad ‖g − ref‖/‖ref‖ ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(1e-1);
    // A training pass leaves A below each W in the forward (stack_a), so no backward packs it again
    const { value: again, parts } = await withOpProfile(() => m.lossAndGrads({ inputIds, labels }));
    expect(again.loss).toBe(out.loss);
    expect(parts).not.toContain('lora_linear_backward/pack A below W');
    // the model's kept [W | B] (wb_cache: promoted, so by default too) takes the place of a per-call copy; B and A
    // go into it from the forward, or (factor_pack: promoted too) from one launch at the pass's start
    const next = process.env.INSTILL_CUDA_NEXT;
    const kept = next === '1' || next === undefined;
    const intoKept = ['lora_linear_forward/pack B into the kept [W | B], A below W', 'lora_pack_factors/every B and A into the kept matrices (one launch)'];
    expect(intoKept.some((p) => parts.includes(p))).toBe(kept);
    if (kept) expect(parts.some((p) => p.startsWith('lora_linear_forward/pack [W | B]'))).toBe(false);
    m.dispose();
  }

  it('a bf16 model on the GPU with bf16 activations (INSTILL_BF16_ACTIVATIONS=1): near its f32-activation pass and the CPU\'s bf16 pass (kernels: verified)', async () => {
    // The same measures as test/model/bf16_activations.test.ts on the CPU
    await withEnv('INSTILL_CUDA_NEXT', 'none', bf16ActivationsCase);
  });

  async function bf16ActivationsCase(): Promise<void> {
    const mg = await bf16LoraModel('cuda'), mc = await bf16LoraModel('cpu');
    const on = await withEnv('INSTILL_BF16_ACTIVATIONS', '1', () => mg.lossAndGrads({ inputIds, labels }));
    const off = await withEnv('INSTILL_BF16_ACTIVATIONS', '0', () => mg.lossAndGrads({ inputIds, labels }));
    // bf16 activations are the GPU's default: unset is the same pass as '1'
    const unset = await withEnv('INSTILL_BF16_ACTIVATIONS', undefined, () => mg.lossAndGrads({ inputIds, labels }));
    expect(unset.loss).toBe(on.loss);
    for (const n of names) expect(unset.grads[n].every((v, i) => Object.is(v, on.grads[n][i])), n).toBe(true);
    const cpuOn = await withEnv('INSTILL_BF16_ACTIVATIONS', '1', () => mc.lossAndGrads({ inputIds, labels }));
    // the CPU test's bounds for INSTILL_BF16_ACTIVATIONS=1 (there the f32 pass is f32 throughout; here its products
    // and flash kernels already round to bf16, so the two should sit closer). Against the CPU's bf16 pass, 10% per
    // tensor: the two round in different places (run 16: worst 4.4% with the verified kernels, 8.2% on one k_proj
    // lora_B with every next piece, whose attention rounds more); a wrong kernel is tens of percent off.
    expect(Math.abs(on.loss - off.loss) / off.loss).toBeLessThan(3e-3);
    expect(Math.abs(on.loss - cpuOn.loss) / cpuOn.loss).toBeLessThan(1e-2);
    let worst = 0, sum = 0, worstCpu = 0, sumCpu = 0, differ = false;
    for (const n of names) {
      const e = relNorm(on.grads[n], off.grads[n]);
      worst = Math.max(worst, e);
      sum += e;
      expect(e, n).toBeLessThan(8e-2);
      const ec = relNorm(on.grads[n], cpuOn.grads[n]);
      worstCpu = Math.max(worstCpu, ec);
      sumCpu += ec;
      expect(ec, n).toBeLessThan(1e-1);
      differ ||= on.grads[n].some((v, i) => !Object.is(v, off.grads[n][i]));
    }
    expect(sum / names.length).toBeLessThan(4e-2);
    expect(differ).toBe(true);  // the switch really changes the pass
    console.log(`bf16 activations on CUDA: grads ‖g − g(f32 activations)‖/‖·‖ worst ${worst.toExponential(2)}, mean ${(sum / names.length).toExponential(2)}; ` +
      `against the CPU's bf16 activations worst ${worstCpu.toExponential(2)}, mean ${(sumCpu / names.length).toExponential(2)}`);
    mg.dispose();
    mc.dispose();
    // With dropout (lora_dropout on f32 copies of the bf16 activations), the same masks on both. The yardstick is the
    // CPU's f32-activation pass with those masks: on the CPU, bf16 activations sit 5.5–6.8% from it on the worst
    // tensor (mean 3.0–3.8%, dropout seeds 3, 7, 11), and the GPU's and the CPU's bf16 passes round in different
    // places, so they sit up to ~√2 of that from each other (run 14: 9.1% on one k_proj lora_B, once the bound here
    // was 8% between the two). The GPU's may be no farther from the yardstick than the CPU's own bf16 pass, with a
    // margin, per tensor (x1.5, at least 10%: run 16 measured 8.7% on one gate_proj lora_A where the CPU's was 5.5%)
    // and on average; other masks would put it ~40% away on average (min 10%).
    const dg = await bf16LoraModel('cuda', 0.1), dc = await bf16LoraModel('cpu', 0.1);
    const gd = await withEnv('INSTILL_BF16_ACTIVATIONS', '1', () => dg.lossAndGrads({ inputIds, labels }, { dropoutSeed: 3 }));
    const cd = await withEnv('INSTILL_BF16_ACTIVATIONS', '1', () => dc.lossAndGrads({ inputIds, labels }, { dropoutSeed: 3 }));
    expect(Math.abs(gd.loss - cd.loss) / cd.loss).toBeLessThan(1e-2);
    const c32 = await withEnv('INSTILL_BF16_ACTIVATIONS', '0', () => dc.lossAndGrads({ inputIds, labels }, { dropoutSeed: 3 }));
    let gpuSum = 0, cpuSum = 0;
    for (const n of names) {
      const eg = relNorm(gd.grads[n], c32.grads[n]), ec = relNorm(cd.grads[n], c32.grads[n]);
      gpuSum += eg;
      cpuSum += ec;
      expect(eg, `dropout ${n}: the GPU's bf16 pass against the CPU's f32 one (the CPU's bf16 pass: ${ec})`).toBeLessThan(Math.max(1e-1, 1.5 * ec));
      expect(relNorm(gd.grads[n], cd.grads[n]), `dropout ${n}: against the CPU's bf16 pass`).toBeLessThan(1.2e-1);
    }
    console.log(`bf16 activations on CUDA with dropout: mean ‖g − g(CPU, f32 activations)‖/‖·‖ ${(gpuSum / names.length).toExponential(2)} ` +
      `(the CPU's bf16 pass ${(cpuSum / names.length).toExponential(2)})`);
    expect(gpuSum / names.length).toBeLessThan(Math.max(4e-2, 1.5 * cpuSum / names.length));
    dg.dispose();
    dc.dispose();
  }

  it('a model with head dim 64 (tensor-core attention), GQA and packed rows: GPU against CPU', async () => {
    const cfg = { model_type: 'llama', hidden_size: 128, intermediate_size: 200, num_hidden_layers: 2, num_attention_heads: 2,
      num_key_value_heads: 1, vocab_size: 300, rms_norm_eps: 1e-5, tie_word_embeddings: true, max_position_embeddings: 512 };
    const mg = randomModel(cfg, { seed: 11, device: 'cuda' });
    const mc = randomModel(cfg, { seed: 11 });
    for (const m of [mg, mc]) m.addLora({ r: 4, alpha: 8, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], seed: 3 });
    const B = { init: mc.adapterWeights() };
    // B starts at zero: give it values so every path carries signal
    for (const [n, v] of Object.entries(B.init)) if (n.includes('lora_B')) for (let i = 0; i < v.length; i++) v[i] = Math.sin(i * 0.37 + n.length) * 0.05;
    mg.setAdapterWeights(B.init);
    mc.setAdapterWeights(B.init);
    const T = 150;
    const ids = Array.from({ length: T }, (_, i) => (i * 37 + 11) % 300);
    const segs = Array.from({ length: T }, (_, i) => (i < 61 ? 1 : i < 149 ? 2 : 3));
    const batch = { inputIds: [ids], labels: [ids], segmentIds: [segs] };
    const g = await mg.lossAndGrads(batch);
    const c = await mc.lossAndGrads(batch);
    expect(Math.abs(g.loss - c.loss) / c.loss).toBeLessThan(1e-2);
    let worst = 0;
    for (const n of Object.keys(c.grads)) worst = Math.max(worst, relNorm(g.grads[n], c.grads[n]));
    console.log(`head dim 64 model, GPU vs CPU: worst grad ‖g − ref‖/‖ref‖ ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(3e-2);
    mg.dispose();
    mc.dispose();
  });

  it('LoRA dropout on the GPU draws the CPU\'s masks: the same gradients for the same dropout seed', async () => {
    const init: Record<string, Float32Array> = {};
    for (const n of names) init[n] = ref.readArray(n) as Float32Array;
    const targetModules = gpu.loraConfig!.targetModules;
    const lc = gpu.loraConfig!;
    const dg = await loadModel(fixturePath('stories260K'), { device: 'cuda' });
    const dc = await loadModel(fixturePath('stories260K'));
    for (const m of [dg, dc]) {
      m.addLora({ r: lc.r, alpha: lc.alpha, rsLora: lc.rsLora, targetModules, dropout: 0.3 });
      m.setAdapterWeights(init);
    }
    const g = await dg.lossAndGrads({ inputIds, labels }, { dropoutSeed: 1234 });
    const c = await dc.lossAndGrads({ inputIds, labels }, { dropoutSeed: 1234 });
    const c2 = await dc.lossAndGrads({ inputIds, labels }, { dropoutSeed: 99 });
    expect(Math.abs(g.loss - c.loss) / c.loss).toBeLessThan(1e-2);
    let worst = 0, other = 0;
    for (const n of names) {
      worst = Math.max(worst, relNorm(g.grads[n], c.grads[n]));
      other = Math.max(other, relNorm(c2.grads[n], c.grads[n]));
    }
    expect(worst).toBeLessThan(1e-2);
    expect(other).toBeGreaterThan(0.1);  // another seed really gives other masks: the comparison is sharp
    dg.dispose();
    dc.dispose();
  });

  it('generation on the GPU: each greedy token is the CPU model\'s argmax (up to bf16 near-ties)', async () => {
    const prompt = [1, 403, 407, 261, 378];
    const out = await gpu.generate(prompt, { maxNewTokens: 24 });
    expect(out.ids.length).toBe(24);
    const seq = [...prompt, ...out.ids];
    const logits = (await cpu.logits([seq])).toArray() as Float32Array;
    const V = cpu.spec.vocabSize;
    for (let t = 0; t < out.ids.length; t++) {
      const row = logits.subarray((prompt.length - 1 + t) * V, (prompt.length + t) * V);
      let max = -Infinity;
      for (const x of row) max = Math.max(max, x);
      expect(max - row[out.ids[t]], `token ${t}`).toBeLessThan(0.05 * Math.max(1, Math.abs(max)));
    }
  });

  // The next pieces (INSTILL_CUDA_NEXT) last: a piece whose kernel faults poisons the process's GPU context, and
  // with it every test after it in this file (vitest runs a file's tests in order, each file in its own process).

  // INSTILL_CUDA_NEXT=wb_cache: the model keeps each adapted linear's [W | B] (W copied in by the first forward,
  // B written by each), so a forward copies no W. The same bf16 copy of W and the same products: the same bits.
  it('a bf16 model keeping its [W | B] (INSTILL_CUDA_NEXT=wb_cache): the bits of the per-call copy, W copied once, a new W seen', async () => {
    const m = await bf16LoraModel();
    const adapted = names.filter((n) => n.endsWith('lora_A.weight')).length;
    const pass = (kept: boolean) => withEnv('INSTILL_CUDA_NEXT', kept ? 'wb_cache' : 'none', async () => {
      const { value: out, calls: parts } = await withOpProfile(() => m.lossAndGrads({ inputIds, labels }));
      return { out, parts };
    });
    const same = (a: Awaited<ReturnType<typeof pass>>['out'], b: Awaited<ReturnType<typeof pass>>['out']) => {
      expect(a.loss).toBe(b.loss);
      for (const n of names) expect(Buffer.from(a.grads[n].buffer).equals(Buffer.from(b.grads[n].buffer)), n).toBe(true);
    };
    const plain = await pass(false);
    const first = await pass(true), second = await pass(true);
    same(first.out, plain.out);
    same(second.out, plain.out);
    expect(first.parts['lora_linear_forward/copy W into the kept [W | B]']).toBe(adapted);
    expect(second.parts['lora_linear_forward/copy W into the kept [W | B]']).toBeUndefined();
    // B each forward (with A below W where W has room for it: rows of a multiple of 8)
    const packB = (parts: Record<string, number>) =>
      (parts['lora_linear_forward/pack B into the kept [W | B], A below W'] ?? 0) + (parts['lora_linear_forward/pack B into the kept [W | B]'] ?? 0);
    expect(packB(second.parts)).toBe(adapted);
    expect(Object.keys(second.parts).some((p) => p.startsWith('lora_linear_forward/pack [W | B]'))).toBe(false);
    expect(Object.keys(plain.parts).some((p) => p.startsWith('lora_linear_forward/pack [W | B]'))).toBe(true);
    // a new W (setWeights): the kept copies go, so the next pass multiplies by the new W
    const wName = 'model.layers.0.self_attn.q_proj.weight';
    const w0 = m.weights()[wName];
    m.setWeights({ [wName]: w0.map((v) => -2 * v) }, { strict: false });
    const changedKept = await pass(true), changedPlain = await pass(false);
    same(changedKept.out, changedPlain.out);
    expect(changedKept.out.loss).not.toBe(plain.out.loss);
    expect(changedKept.parts['lora_linear_forward/copy W into the kept [W | B]']).toBe(adapted);
    // generation reads it too: the same tokens
    m.setWeights({ [wName]: w0 }, { strict: false });
    const prompt = inputIds[0].slice(0, 5);
    const g0 = await withEnv('INSTILL_CUDA_NEXT', 'none', () => m.generate(prompt, { maxNewTokens: 8 }));
    const g1 = await withEnv('INSTILL_CUDA_NEXT', 'wb_cache', () => m.generate(prompt, { maxNewTokens: 8 }));
    expect(g1.ids).toEqual(g0.ids);
    m.dispose();
  });

  it('a bf16 model on the GPU: loss and gradients near the float64 reference (bf16 products; kernels: next)', async () => {
    // next: every piece waiting for a GPU run (read per call)
    await withEnv('INSTILL_CUDA_NEXT', '1', bf16ModelCase);
  });

  it('a bf16 model on the GPU with bf16 activations (INSTILL_BF16_ACTIVATIONS=1): near its f32-activation pass and the CPU\'s bf16 pass (kernels: next)', async () => {
    await withEnv('INSTILL_CUDA_NEXT', '1', bf16ActivationsCase);
  });
});
