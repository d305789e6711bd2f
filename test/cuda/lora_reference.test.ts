// The model's LoRA loss and gradients on device 'cuda' against
// stories260K/lora_reference.safetensors (float64 PyTorch): within 1e-2 of the
// largest |grad| of each tensor (bf16 tolerance: the CUDA GEMMs round operands
// to bf16). Runs only where runtime.info().devices has 'cuda'. Until the model
// itself runs on CUDA (loadModel(..., { device: 'cuda' }) is refused with
// E_DEVICE today: native/model reads host memory), the test says so and skips,
// so bench/gpu-check.sh's table shows the gap instead of a pass.
import { beforeAll, describe, expect, it } from 'vitest';

import { runtime } from '../../src/index.js';
import { LORA_TARGETS, loadModel, type Model } from '../../src/model/model.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { native } from '../../src/native.js';
import { fixturePath, haveFixture } from '../helpers/fixtures.js';

const REF = 'stories260K/lora_reference.safetensors';
const hasCuda = runtime.info().devices.includes('cuda');
if (!hasCuda) console.warn(`skipping test/cuda/lora_reference: ${native().deviceUnavailableReason('cuda')}`);

function relToMax(a: Float32Array, b: Float32Array): number {
  let d = 0, m = 0;
  for (let i = 0; i < b.length; i++) {
    if (!Number.isFinite(a[i])) return Infinity;
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return m === 0 ? d : d / m;
}

describe.skipIf(!hasCuda || !haveFixture(REF))('LoRA reference on CUDA', () => {
  let model: Model | undefined;
  let refusal = '';
  let ref: SafetensorsFile;

  beforeAll(async () => {
    ref = SafetensorsFile.open(fixturePath(REF));
    try {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any -- 'cuda' is not in the model's option type yet
      model = await loadModel(fixturePath('stories260K'), { device: 'cuda' } as any);
    } catch (e) {
      refusal = `${(e as { code?: string }).code}: ${(e as Error).message}`;
    }
  });

  it('loss and every LoRA gradient within 1e-2 of the float64 reference', async (ctx) => {
    if (!model) {
      console.warn(`SKIPPED on a GPU: the model does not run on CUDA yet (${refusal})`);
      ctx.skip();
      return;
    }
    const md = ref.metadata;
    const [B, T] = ref.info('input_ids').shape;
    const ids = ref.readArray('input_ids') as BigInt64Array;
    const labels = ref.readArray('labels') as BigInt64Array;
    const r = Number(md.lora_r), alpha = Number(md.lora_alpha);
    const scale = md.lora_scale !== undefined ? Number(md.lora_scale) : alpha / r;
    const rsLora = Math.abs(scale - alpha / Math.sqrt(r)) < 1e-9 && Math.abs(scale - alpha / r) > 1e-9;
    model.addLora({ r, alpha, rsLora, targetModules: md.target_modules.split(',').map((t) => t.trim()) as (typeof LORA_TARGETS)[number][] });
    const names = ref.names().filter((n) => n.endsWith('.weight') && n.startsWith('base_model.'));
    const init: Record<string, Float32Array> = {};
    for (const n of names) init[n] = ref.readArray(n) as Float32Array;
    model.setAdapterWeights(init);
    const out = await model.lossAndGrads({ inputIds: ids, labels, batchSize: B, seqLen: T });
    expect(Math.abs(out.loss - Number(md.loss_float64)) / Number(md.loss_float64)).toBeLessThan(1e-2);
    for (const n of names) {
      const e = relToMax(out.grads[n], ref.readArray(`${n}.grad`) as Float32Array);
      expect(e, n).toBeLessThan(1e-2);
    }
  });
});
