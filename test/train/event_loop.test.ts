// The event loop stays free while a Trainer runs in this process: a 5 ms interval timer never waits 50 ms.
import { describe, expect, it } from 'vitest';
import { haveFixture } from '../helpers/fixtures.js';
import { setup, tmp, trainer } from './helpers/setup.js';

describe.skipIf(!haveFixture('stories260K/model.safetensors'))('event loop while training', () => {
  it('setInterval(5 ms) drift stays under 50 ms across steps, evals and checkpoints', async () => {
    const s = await setup({ batchSize: 8, maxSeqLen: 256, r: 16 });
    const t = trainer(s, { maxSteps: 30, evalEvery: 5, saveEvery: 5, outputDir: tmp('loop') });
    let steps = 0;
    let stepMs = 0;
    t.on('step', (e) => {
      steps++;
      stepMs = Math.max(stepMs, e.tokens / e.tokensPerSec * 1000);
    });
    let last = performance.now();
    let worst = 0;
    let ticks = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - last - 5);
      last = now;
      ticks++;
    }, 5);
    try {
      await t.train();
    } finally {
      clearInterval(timer);
    }
    console.log(`30 steps, longest step ${stepMs.toFixed(0)} ms, ${ticks} ticks, worst timer delay ${worst.toFixed(1)} ms`);
    expect(steps).toBe(30);
    expect(stepMs).toBeGreaterThan(50); // the work per step is long enough that blocking would show
    expect(worst).toBeLessThan(50);
  });
});
