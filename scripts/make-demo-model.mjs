#!/usr/bin/env node
// Regenerates the demo's base model (demo/model/) and instruction data (demo/data/) with instill's own
// full fine-tuning mode: see src/demo/make_model.ts for what is made and how. Needs a build
// (`npm run build`). Usage: node scripts/make-demo-model.mjs [--seed N] [--steps N] [--out DIR]
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { seed: { type: 'string' }, steps: { type: 'string' }, out: { type: 'string' } } });
const { makeDemoModel, DEMO_SEED } = await import(join(root, 'dist', 'src', 'demo', 'make_model.js'));
const out = resolve(values.out ?? join(root, 'demo'));
const t0 = performance.now();
const r = await makeDemoModel({
  modelDir: join(out, 'model'),
  dataDir: join(out, 'data'),
  seed: values.seed !== undefined ? Number(values.seed) : DEMO_SEED,
  steps: values.steps !== undefined ? Number(values.steps) : undefined,
  onStep: (e) => {
    if (e.step % 100 === 0 || e.step === e.totalSteps) process.stderr.write(`pre-training step ${e.step}/${e.totalSteps}  loss ${e.loss.toFixed(4)}\n`);
  },
});
console.log(
  `wrote ${r.modelDir} (${r.parameters} parameters, pre-trained on ${r.corpusSentences} sentences, final loss ${r.finalLoss?.toFixed(4)}) ` +
    `and ${r.trainRecords} train / ${r.heldoutRecords} held-out instructions in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
);
