// Model + loaders for trainer tests on the stories260K fixture.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTokenizer } from '../../../src/data/tokenizer.js';
import { loadDataset } from '../../../src/data/dataset.js';
import { createDataLoaders } from '../../../src/data/loader.js';
import { loadModel, type Model } from '../../../src/model/model.js';
import { Trainer, type TrainerOptions } from '../../../src/train/trainer.js';
import { fixturePath } from '../../helpers/fixtures.js';
import { writeQaDataset } from './qa.js';

export const MODEL_DIR = fixturePath('stories260K');

export function tmp(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `instill-${prefix}-`));
}

export async function setup(opts: { r?: number; seed?: number; batchSize?: number; maxSeqLen?: number; validation?: number; full?: boolean; dropout?: number } = {}) {
  const dir = tmp('qa');
  const files = writeQaDataset(dir);
  const tokenizer = await loadTokenizer(MODEL_DIR);
  const ds = await loadDataset(files.train, { tokenizer, maxSeqLen: opts.maxSeqLen ?? 64 });
  const seed = opts.seed ?? 1;
  const loaders = createDataLoaders(ds, tokenizer.padId, { batchSize: opts.batchSize ?? 2, maxSeqLen: opts.maxSeqLen ?? 64, seed, validation: opts.validation ?? 0.15 });
  const model = await loadModel(MODEL_DIR, { full: opts.full === true });
  if (!opts.full) model.addLora({ r: opts.r ?? 4, alpha: 8, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], seed, dropout: opts.dropout ?? 0 });
  return { dir, files, tokenizer, ds, loaders, model, seed };
}

export function trainer(s: { loaders: ReturnType<typeof createDataLoaders>; model: Model; seed: number }, o: Partial<TrainerOptions>): Trainer {
  return new Trainer({ model: s.model, train: s.loaders.train, validation: s.loaders.validation, lr: 3e-3, schedule: 'cosine', warmupSteps: 2, seeds: { seed: s.seed }, ...o });
}
