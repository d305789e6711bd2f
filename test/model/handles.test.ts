// The model's own tensors reach TypeScript as handles that share them (loraTensor, weightTensor, momentTensor). A
// handle left to the garbage collector keeps its tensor's memory after model.dispose(), or after addLora replaced the
// adapter: run 20 saw every job leave its LoRA A matrices on the GPU (test/cuda/memory.test.ts). Here, on the CPU,
// every handle the Model's methods take is let go of before the method returns.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { randomModel, type Model } from '../../src/model/model.js';
import type { TensorHandle } from '../../src/native.js';
import { base } from './helpers/tiny_model.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Records every handle the model's engine hands out through its three tensor getters. */
function recordHandles(model: Model): TensorHandle[] {
  const taken: TensorHandle[] = [];
  const handle = (model as unknown as { handle: Record<string, (...a: unknown[]) => unknown> }).handle;
  for (const name of ['loraTensor', 'weightTensor', 'momentTensor']) {
    const original = handle[name].bind(handle);
    // (an own property over the prototype's method, which N-API makes read-only)
    Object.defineProperty(handle, name, {
      value: (...args: unknown[]) => {
        const h = original(...args) as TensorHandle;
        taken.push(h);
        return h;
      },
    });
  }
  return taken;
}

function expectAllLetGo(taken: TensorHandle[], what: string): void {
  expect(taken.length, `${what} took no handle: the recording missed it`).toBeGreaterThan(0);
  const kept = taken.filter((h) => {
    try {
      void h.shape;  // (a disposed handle throws E_ARG)
      return true;
    } catch {
      return false;
    }
  });
  expect(kept.length, `${what} kept ${kept.length} of ${taken.length} handles`).toBe(0);
  taken.length = 0;
}

describe("the Model's methods let go of the engine's tensor handles", () => {
  const ids = [[1, 5, 9, 2, 7, 3, 8, 4]];

  it('LoRA: addLora, adapter weights and gradients, optimizer state, saveAdapter / loadAdapter', async () => {
    const model = randomModel({ ...base, model_type: 'llama' }, { seed: 3 });
    const taken = recordHandles(model);
    model.addLora({ r: 4, alpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'], seed: 1 });
    expectAllLetGo(taken, 'addLora');
    const w = model.adapterWeights();
    expectAllLetGo(taken, 'adapterWeights');
    model.setAdapterWeights(w);
    expectAllLetGo(taken, 'setAdapterWeights');
    await model.lossAndGrads({ inputIds: ids, labels: ids });
    expectAllLetGo(taken, 'lossAndGrads (adapterGrads)');
    await model.optimizerStep({ lr: 1e-3 });
    const state = model.optimizerState();
    expectAllLetGo(taken, 'optimizerState');
    model.setOptimizerState(state);
    expectAllLetGo(taken, 'setOptimizerState');
    const dir = mkdtempSync(join(tmpdir(), 'instill-handles-'));
    dirs.push(dir);
    model.saveAdapter(dir);
    expectAllLetGo(taken, 'saveAdapter');
    model.loadAdapter(dir);
    expectAllLetGo(taken, 'loadAdapter');
    expect(model.device).toBe('cpu');
    expectAllLetGo(taken, 'device');
    model.dispose();
  });

  it('weights: weights(), setWeights, grads in full mode, saveModel', async () => {
    const model = randomModel({ ...base, model_type: 'llama' }, { seed: 4, full: true });
    const taken = recordHandles(model);
    const w = model.weights();
    expectAllLetGo(taken, 'weights');
    model.setWeights({ 'model.norm.weight': w['model.norm.weight'] }, { strict: false });
    expectAllLetGo(taken, 'setWeights');
    await model.lossAndGrads({ inputIds: ids, labels: ids });
    expectAllLetGo(taken, 'lossAndGrads (grads)');
    const dir = mkdtempSync(join(tmpdir(), 'instill-handles-'));
    dirs.push(dir);
    model.saveModel(join(dir, 'model'));
    expectAllLetGo(taken, 'saveModel');
    model.dispose();
  });
});
