// From a TrainConfig to a ready Trainer: tokenizer, chat template, datasets, loaders, model + LoRA.
// The CLI (`instill train`) and the demo both go through here; a service can too.
import { ErrorCode, InstillError } from '../errors.js';
import { resolveChatTemplate, type ChatTemplate } from '../data/chat_template.js';
import { loadDataset, type TokenizedDataset } from '../data/dataset.js';
import { defaultMaxSeqLen } from '../data/inspect.js';
import { BatchLoader, createDataLoaders, type LoaderOptions } from '../data/loader.js';
import { loadTokenizer, type Tokenizer } from '../data/tokenizer.js';
import { resolveModelDir } from '../model/hub.js';
import { loadModel, type Model } from '../model/model.js';
import { runtime } from '../runtime.js';
import type { TrainConfig } from './config.js';
import { readPromptAnswers, type PromptAnswer } from './exact_match.js';
import { Trainer } from './trainer.js';

export interface PreparedTraining {
  config: TrainConfig;
  modelDir: string;
  model: Model;
  tokenizer: Tokenizer;
  template: ChatTemplate | null;
  train: TokenizedDataset;
  validation: TokenizedDataset | null;
  trainer: Trainer;
  /** Held-out prompts for the exact-match evaluation (empty when config.exactMatch is 0). */
  evalPairs: PromptAnswer[];
  maxSeqLen: number;
}

export async function prepareTraining(cfg: TrainConfig, options: { signal?: AbortSignal; log?: (line: string) => void } = {}): Promise<PreparedTraining> {
  const log = options.log ?? (() => undefined);
  if (cfg.full && cfg.dtype !== 'f32') throw new InstillError(ErrorCode.ARG, `--full trains every weight in f32: drop --dtype ${cfg.dtype}`);
  if (cfg.exactMatch > 0 && !cfg.evalData) throw new InstillError(ErrorCode.ARG, '--exact-match N needs --eval-data FILE (held-out records to answer)');
  if (cfg.threads !== null) runtime.setThreads(cfg.threads);
  const modelDir = await resolveModelDir(cfg.model);
  const tokenizer = await loadTokenizer(modelDir);
  const template = resolveChatTemplate(tokenizer, cfg.template);
  const maxSeqLen = cfg.maxSeqLen ?? (await defaultMaxSeqLen(modelDir, tokenizer));
  const dsOpts = { tokenizer, template, format: cfg.format ?? undefined, trainOn: cfg.trainOn, maxSeqLen, truncation: cfg.truncation };
  const train = await loadDataset(cfg.data, dsOpts);
  const lopts: LoaderOptions = { batchSize: cfg.batchSize, maxSeqLen, packing: cfg.packing, seed: cfg.seed };
  let trainLoader: BatchLoader;
  let valLoader: BatchLoader | null;
  let validation: TokenizedDataset | null = null;
  if (cfg.evalData) {
    validation = await loadDataset(cfg.evalData, dsOpts);
    trainLoader = new BatchLoader(train, null, tokenizer.padId, lopts);
    valLoader = new BatchLoader(validation, null, tokenizer.padId, { ...lopts, shuffle: false });
  } else {
    const l = createDataLoaders(train, tokenizer.padId, { ...lopts, validation: cfg.validation });
    trainLoader = l.train;
    valLoader = l.validation;
  }
  log(`data: ${train.size} training examples${validation ? `, ${validation.size} held-out` : valLoader ? ' (part held out for validation)' : ''}; rows of ${maxSeqLen} tokens`);

  const model = await loadModel(modelDir, { dtype: cfg.dtype, full: cfg.full, device: cfg.device });
  if (cfg.gradientCheckpointing) model.setGradientCheckpointing(true);
  model.setActivations(cfg.activations);
  if (!cfg.full) model.addLora({ r: cfg.loraR, alpha: cfg.loraAlpha, targetModules: cfg.targetModules, rsLora: cfg.rsLora, dropout: cfg.loraDropout, seed: cfg.seed });

  let totalSteps = cfg.maxSteps;
  if (totalSteps === null) {
    let micro = 0;
    for (let e = 0; e < cfg.epochs; e++) micro += trainLoader.batchesInEpoch(e);
    totalSteps = Math.ceil(micro / cfg.gradAccum);
  }
  const evalEvery = cfg.evalEvery ?? (valLoader ? Math.max(1, Math.floor(totalSteps / 10)) : 0);
  const { quiet: _q, jsonl: _j, resume: _r, resumeFrom: _rf, threads: _t, device: _d, ...recorded } = cfg;  // a run may resume on another device
  const trainer = new Trainer({
    model,
    train: trainLoader,
    validation: valLoader,
    outputDir: cfg.output,
    epochs: cfg.epochs,
    maxSteps: cfg.maxSteps ?? undefined,
    gradAccum: cfg.gradAccum,
    lr: cfg.lr,
    schedule: cfg.schedule,
    warmupSteps: cfg.warmupSteps,
    warmupRatio: cfg.warmupRatio ?? undefined,
    minLrRatio: cfg.minLrRatio,
    beta1: cfg.beta1,
    beta2: cfg.beta2,
    eps: cfg.eps,
    weightDecay: cfg.weightDecay,
    maxGradNorm: cfg.maxGradNorm,
    evalEvery,
    evalBatches: cfg.evalBatches,
    saveEvery: cfg.saveEvery,
    keepLast: cfg.keepLast,
    seeds: { seed: cfg.seed },
    resumeFrom: cfg.resumeFrom ?? (cfg.resume ? 'latest' : null),
    signal: options.signal,
    baseModelNameOrPath: cfg.model,
    extraConfig: recorded as unknown as Record<string, unknown>,
  });
  let evalPairs: PromptAnswer[] = [];
  if (cfg.exactMatch > 0) {
    if (!template) throw new InstillError(ErrorCode.ARG, '--exact-match needs a chat template: the model has none, pass --template');
    for (const f of cfg.evalData!) {
      if (evalPairs.length >= cfg.exactMatch) break;
      evalPairs = evalPairs.concat(await readPromptAnswers(f, cfg.exactMatch - evalPairs.length, cfg.format ?? undefined));
    }
  }
  return { config: cfg, modelDir, model, tokenizer, template, train, validation, trainer, evalPairs, maxSeqLen };
}
