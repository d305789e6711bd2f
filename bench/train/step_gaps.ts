// The host's time between two training steps: from the end of one step's optimizerStep to the start of the next
// step's lossAndGrads, in the Trainer (data assembly, metrics.jsonl, events), on the demo model (demo/) with its
// instruction set, LoRA on all seven projections, batches of 8 × 256, metrics written to a temporary folder. On a GPU
// that time is the device's idle time between steps; here the step itself runs on the CPU.
//
//   npx tsc -p tsconfig.json && node dist/bench/train/step_gaps.js [--steps N] [--json]
//
// Prints the median gap and the median step (lossAndGrads) over N steps (default 60; the first 5 left out).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { loadTokenizer } from '../../src/data/tokenizer.js';
import { loadDataset } from '../../src/data/dataset.js';
import { createDataLoaders } from '../../src/data/loader.js';
import { loadModel } from '../../src/model/model.js';
import { Trainer } from '../../src/train/trainer.js';
import { median, repoRoot } from '../harness.js';

const { values } = parseArgs({ options: { steps: { type: 'string', default: '60' }, json: { type: 'boolean', default: false } } });
const steps = Number(values.steps);
const root = repoRoot();
const dir = join(root, 'demo', 'model');
const tokenizer = await loadTokenizer(dir);
const ds = await loadDataset([join(root, 'demo', 'data', 'train.jsonl')], { tokenizer, maxSeqLen: 256 });
const loaders = createDataLoaders(ds, tokenizer.padId, { batchSize: 8, maxSeqLen: 256, seed: 1 });
const model = await loadModel(dir);
model.addLora({ r: 8, alpha: 16, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], seed: 1 });
const out = mkdtempSync(join(tmpdir(), 'instill-step-gaps-'));

// each call's start and end, in order
const marks: Array<{ what: 'step' | 'optimizer'; start: number; end: number }> = [];
const lossAndGrads = model.lossAndGrads.bind(model), optimizerStep = model.optimizerStep.bind(model);
model.lossAndGrads = async (...a: Parameters<typeof lossAndGrads>) => {
  const start = performance.now();
  const r = await lossAndGrads(...a);
  marks.push({ what: 'step', start, end: performance.now() });
  return r;
};
model.optimizerStep = async (...a: Parameters<typeof optimizerStep>) => {
  const start = performance.now();
  const r = await optimizerStep(...a);
  marks.push({ what: 'optimizer', start, end: performance.now() });
  return r;
};
const trainer = new Trainer({ model, train: loaders.train, lr: 1e-3, schedule: 'constant', seeds: { seed: 1 }, maxSteps: steps, outputDir: out, saveEvery: 0 });
await trainer.train();
rmSync(out, { recursive: true, force: true });

const gaps: number[] = [], times: number[] = [];
for (let i = 1; i < marks.length; i++) {
  if (marks[i].what === 'step' && marks[i - 1].what === 'optimizer') gaps.push(marks[i].start - marks[i - 1].end);
  if (marks[i].what === 'step') times.push(marks[i].end - marks[i].start);
}
const g = median(gaps.slice(5)), t = median(times.slice(5));
if (values.json) console.log(JSON.stringify({ steps, gapMs: g, stepMs: t }));
else console.log(`${steps} steps: between two steps ${g.toFixed(3)} ms (median), a step's lossAndGrads ${t.toFixed(2)} ms`);
