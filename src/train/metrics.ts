// metrics.jsonl: one JSON object per line, appended as training goes.
//
//   {"type":"train","step":3,"epoch":0,"loss":2.31,"lr":0.0002,"grad_norm":1.2,"tokens":512,"tokens_per_sec":9000,
//    "model_tflops":0.45,"elapsed_s":1.5}
//   {"type":"eval","step":10,"loss":2.1,"tokens":800}
//
// A resumed run first drops the lines of steps after the checkpoint it resumes from (they belong to
// the part of the stopped run that is being redone), so the file reads as one run.
import { existsSync, readFileSync } from 'node:fs';
import { appendFile, writeFile } from 'node:fs/promises';

export interface TrainMetric {
  type: 'train';
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  grad_norm: number;
  tokens: number;
  tokens_per_sec: number;
  /** the step's model FLOPs (src/model/flops.ts) over its time, in TFLOP/s (absent in files from before it) */
  model_tflops?: number;
  elapsed_s: number;
}

export interface EvalMetric {
  type: 'eval';
  step: number;
  loss: number;
  tokens: number;
}

export type Metric = TrainMetric | EvalMetric;

export function readMetrics(path: string): Metric[] {
  if (!existsSync(path)) return [];
  const out: Metric[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      const m = JSON.parse(line) as Metric;
      if ((m.type === 'train' || m.type === 'eval') && typeof m.step === 'number') out.push(m);
    } catch {
      // a line cut by a crash: skip it
    }
  }
  return out;
}

export class MetricsLog {
  private chain: Promise<void> = Promise.resolve();
  private failure: unknown = null;

  constructor(readonly path: string) {}

  /** Keeps only the metrics of steps <= step (resume), or starts an empty file (step 0). */
  async truncateAfter(step: number): Promise<void> {
    const kept = readMetrics(this.path).filter((m) => m.step <= step);
    await writeFile(this.path, kept.map((m) => JSON.stringify(m) + '\n').join(''));
  }

  /**
   * Queues one line: the writes run in the background, in call order, so a training step does not wait for the
   * file (~0.4 ms a step, as long as the rest of a small step's host work). A write that fails is reported by
   * flush(), and by every flush() after it.
   */
  append(m: Metric): void {
    const line = JSON.stringify(m) + '\n';
    this.chain = this.chain.then(() => appendFile(this.path, line)).catch((err: unknown) => {
      this.failure ??= err;
    });
  }

  /** Waits for every queued line to be written; throws the first write's error, if one failed. */
  async flush(): Promise<void> {
    await this.chain;
    if (this.failure !== null) throw this.failure;
  }
}
