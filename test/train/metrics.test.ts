// metrics.jsonl's writer: lines queued in the background, written in call order; a failed write surfaces at
// flush() (every flush after it), never as an unhandled rejection.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { MetricsLog, readMetrics } from '../../src/train/metrics.js';
import { tmp } from './helpers/setup.js';

describe('MetricsLog', () => {
  it('queues lines without waiting for the file and writes them in call order', async () => {
    const path = join(tmp('metrics'), 'metrics.jsonl');
    const log = new MetricsLog(path);
    await log.truncateAfter(0);
    for (let step = 1; step <= 50; step++) {
      expect(log.append({ type: 'train', step, epoch: 0, loss: 1 / step, lr: 1e-3, grad_norm: 1, tokens: 8, tokens_per_sec: 1, elapsed_s: step })).toBeUndefined();
      if (step % 10 === 0) log.append({ type: 'eval', step, loss: 2 / step, tokens: 4 });
    }
    await log.flush();
    const ms = readMetrics(path);
    expect(ms).toHaveLength(55);
    expect(ms.filter((m) => m.type === 'train').map((m) => m.step)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(ms.findIndex((m) => m.type === 'eval' && m.step === 10)).toBe(10);  // after step 10's line, before 11's
  });

  it('a write that fails is thrown by flush(), and by every flush after it', async () => {
    const log = new MetricsLog(join(tmp('metrics'), 'no-such-folder', 'metrics.jsonl'));
    log.append({ type: 'eval', step: 1, loss: 1, tokens: 1 });
    log.append({ type: 'eval', step: 2, loss: 1, tokens: 1 });
    await expect(log.flush()).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(log.flush()).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
