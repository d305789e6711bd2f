// GPU memory across training jobs, as a service that trains per-customer adapters one after another sees it: a job
// (load, LoRA, steps, dispose) gives back every byte it took from the allocator (runtime.deviceMemory), and
// releaseDeviceMemory then hands the cached blocks to the driver. A file of its own, so that no other test's tensors
// are freed (by the garbage collector) while it counts; skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { runtime } from '../../src/index.js';
import { LORA_TARGETS, loadModel } from '../../src/model/model.js';
import { fixturePath, haveFixture } from '../helpers/fixtures.js';

const hasCuda = runtime.info().devices.includes('cuda');

describe.skipIf(!hasCuda || !haveFixture('stories260K/model.safetensors'))('GPU memory across training jobs', () => {
  it('after model.dispose() the bytes in use are where they were before the job; releaseDeviceMemory gives the cached ones back', async () => {
    const ids = Array.from({ length: 2 }, (_, r) => Array.from({ length: 96 }, (_, i) => (i * 37 + 11 * r + 5) % 512));
    const job = async () => {
      const m = await loadModel(fixturePath('stories260K'), { device: 'cuda' });
      m.addLora({ r: 4, alpha: 8, targetModules: [...LORA_TARGETS], seed: 11 });
      for (let k = 0; k < 2; k++) {
        await m.lossAndGrads({ inputIds: ids, labels: ids }, { returnGrads: false });
        await m.optimizerStep({ lr: 1e-3, maxGradNorm: 1 });
      }
      m.dispose();
    };
    await job();  // (the first leaves what the process keeps for every job: the factor packs' job list on the GPU)
    const before = runtime.deviceMemory('cuda', { resetPeak: true });
    for (let j = 0; j < 3; j++) {
      await job();
      expect(runtime.deviceMemory('cuda').inUse, `after job ${j + 2}`).toBe(before.inUse);
    }
    expect(runtime.deviceMemory('cuda').peak).toBeGreaterThan(before.inUse);  // (the jobs did hold memory)
    expect(runtime.releaseDeviceMemory('cuda')).toBeGreaterThan(0);  // what the jobs freed, kept for reuse until now
    const after = runtime.deviceMemory('cuda');
    expect(after.reserved).toBe(after.inUse);
  });

  it('one base model, an adapter per customer: each addLora and its training take no more than the one before', async () => {
    const ids = Array.from({ length: 2 }, (_, r) => Array.from({ length: 80 }, (_, i) => (i * 29 + 7 * r + 3) % 512));
    const m = await loadModel(fixturePath('stories260K'), { device: 'cuda' });
    const inUse: number[] = [];
    for (let c = 0; c < 4; c++) {
      // r 8 and 4 in turn (8 first: the spare rows kept below each W for A are sized by the largest rank so far)
      m.addLora({ r: 8 - 4 * (c % 2), alpha: 8, targetModules: [...LORA_TARGETS], seed: c });
      for (let k = 0; k < 2; k++) {
        await m.lossAndGrads({ inputIds: ids, labels: ids }, { returnGrads: false });
        await m.optimizerStep({ lr: 1e-3 });
      }
      inUse.push(runtime.deviceMemory('cuda').inUse);
    }
    // the same rank, the same bytes: nothing of the replaced adapters (or their moments) stays behind
    expect(inUse[2]).toBe(inUse[0]);
    expect(inUse[3]).toBe(inUse[1]);
    m.dispose();
  });
});
