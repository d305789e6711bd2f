// Trainer: the supervised fine-tuning loop over a Model with LoRA adapters — or, for small models, in
// full fine-tuning mode (model.setTrainable('all'): every weight trainable) — and BatchLoaders.
//
// One optimizer step = one window of `gradAccum` micro-batches, read in order from the train loader
// (windows run on across epoch boundaries; the last window of a run may be shorter). The loss of a step
// is normalised per token over the whole window: the window's batches are assembled first, their target
// tokens N summed, and every micro-batch runs model.lossAndGrads with normalizer N, the first replacing
// the engine's gradients and the rest adding to them (the engine accumulates with +=). The step's loss
// is the sum of the micro-batch losses = Σ token losses / N.
//
// Then one engine call, model.optimizerStep, on the model's device and off the JS thread: the global
// L2 norm of every trainable gradient, clipping to maxGradNorm (torch.nn.utils.clip_grad_norm_), and
// AdamW with fp32 moments kept in the engine — no parameter or gradient crosses to the host, which on
// a GPU would cost more than the step. Checkpoints read the moments (model.optimizerState()) and a
// resumed run writes them back. Full mode: the same over every weight; checkpoints then hold the whole
// model in HF layout, config.json + model.safetensors, instead of an adapter.
//
// LoRA dropout masks come from lossAndGrads' dropoutSeed, derived here from the run's seed and the
// global micro-batch index (saved in checkpoints), so a resumed run draws the same masks.
// Evaluation runs forward only (model.loss).
//
// Everything a step depends on is in a checkpoint: adapter weights, moments, step count (schedule and
// bias correction), the data cursor, and the seeds (the data order is a pure function of seed and epoch;
// see data/loader.ts). So a run resumed from checkpoint k takes exactly the steps k+1.. of a run that
// never stopped, and ends with the same bits.
//
// The forward/backward and the optimizer run off the JS thread (async workers); between awaits the
// trainer does only O(1) work per step, so the event loop stays free. An AbortSignal stops the run
// after the step in progress; the trainer then saves a checkpoint and resolves with reason 'aborted'.
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, InstillError, describe } from '../errors.js';
import { exampleLengths, type Batch } from '../data/batch.js';
import type { BatchLoader, DataCursor, LoadedBatch } from '../data/loader.js';
import type { BatchInput } from '../model/inputs.js';
import { trainingFlops } from '../model/flops.js';
import type { Model } from '../model/model.js';
import { SafetensorsFile } from '../model/safetensors.js';
import {
  ADAPTER_CONFIG_FILE,
  ADAPTER_FILE,
  MODEL_FILE,
  OPTIMIZER_FILE,
  TRAINER_STATE_FILE,
  loadCheckpoint,
  listCheckpoints,
  loadLatestCheckpoint,
  saveCheckpoint,
  type LoadedCheckpoint,
  type TrainerState,
} from './checkpoint.js';
import { MetricsLog, readMetrics } from './metrics.js';
import { lossCurveSvg } from './plot.js';
import { SCHEDULES, createSchedule, warmupStepsOf, type Schedule, type ScheduleName } from './schedule.js';

export interface TrainerOptions {
  /** A model with LoRA adapters (model.addLora), or in full fine-tuning mode (model.setTrainable('all')). */
  model: Model;
  train: BatchLoader;
  validation?: BatchLoader | null;
  /** Checkpoints, metrics.jsonl, loss.svg and the final adapter go here. null: keep nothing on disk. */
  outputDir?: string | null;
  /** Passes over the train loader (default 1). Ignored when maxSteps is set. */
  epochs?: number;
  /** Optimizer steps; overrides epochs (the data loops as often as needed). */
  maxSteps?: number;
  /** Micro-batches per optimizer step (default 1). */
  gradAccum?: number;
  /** Peak learning rate (default 2e-4). */
  lr?: number;
  schedule?: ScheduleName;
  warmupSteps?: number;
  warmupRatio?: number;
  minLrRatio?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Clip the global gradient norm to this (default 1; 0 = no clipping). */
  maxGradNorm?: number;
  /** Validation loss every N steps (and at the end); 0 = only at the end (default). */
  evalEvery?: number;
  /** At most this many validation batches per evaluation (default: all). */
  evalBatches?: number;
  /** Checkpoint every N steps (and at the end); 0 = only at the end (default). */
  saveEvery?: number;
  /** Keep the newest N checkpoints (default 0 = all). */
  keepLast?: number;
  /** Seeds the data loader and the LoRA init were made with (recorded in checkpoints, checked on resume). */
  seeds?: { data?: number; lora?: number; seed?: number };
  /** A checkpoint folder, or 'latest' (the newest complete checkpoint in outputDir; start fresh when none). */
  resumeFrom?: string | null;
  signal?: AbortSignal;
  /** adapter_config.json's base_model_name_or_path (default: the model folder). */
  baseModelNameOrPath?: string;
  /** Extra settings to record in trainer_state.json's config (not checked on resume). */
  extraConfig?: Record<string, unknown>;
}

export interface StepEvent {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Target tokens of the step. */
  targetTokens: number;
  /** Input tokens (non-padding) of the step. */
  tokens: number;
  tokensPerSec: number;
  /** The model FLOPs of the step's examples, counted as MFU counts them (src/model/flops.ts's trainingFlops), and
   * their rate: `instill train` prints it on a GPU, with the MFU where the GPU's peak is known. */
  flops: number;
  flopsPerSec: number;
  elapsedSeconds: number;
  etaSeconds: number;
}

export interface EvalEvent {
  step: number;
  loss: number;
  tokens: number;
}

export interface CheckpointEvent {
  step: number;
  dir: string;
}

export interface TrainResult {
  reason: 'completed' | 'aborted';
  step: number;
  totalSteps: number;
  trainLoss: number | null;
  evalLoss: number | null;
  /** The first validation loss of the run (before any step when validation is given). */
  initialEvalLoss: number | null;
  checkpoint: string | null;
  outputDir: string | null;
  elapsedSeconds: number;
  tokensPerSec: number;
}

export interface TrainerEvents {
  step: [StepEvent];
  eval: [EvalEvent];
  checkpoint: [CheckpointEvent];
  done: [TrainResult];
}

/** LoRA dropout seed (uint32) of the run's micro-batch `index` (0-based over the whole run): a pure function, so resumes match. */
export function dropoutSeedOf(seed: number, index: number): number {
  let h = Math.imul((seed >>> 0) ^ 0x27d4eb2f, 0x9e3779b1) ^ Math.imul(index >>> 0, 0x85ebca6b) ^ Math.imul(Math.floor(index / 4294967296), 0xc2b2ae35);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** What the engine takes of a data-layer Batch: the shifted targets (not the labels too: lossAndGrads takes one of them). */
export function engineBatch(b: Batch): BatchInput {
  return { inputIds: b.inputIds, targets: b.targets, segmentIds: b.segmentIds, positions: b.positions, batchSize: b.batchSize, seqLen: b.seqLen };
}

function int(name: string, v: unknown, min: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new InstillError(ErrorCode.ARG, `Expected integer >= ${min} for ${name} but received ${describe(v)}`);
  return v;
}

function num(name: string, v: unknown, lo: number, hi: number, dflt: number, loOpen = false): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v > hi || (loOpen ? v <= lo : v < lo)) {
    throw new InstillError(ErrorCode.ARG, `Expected a number in ${loOpen ? '(' : '['}${lo}, ${hi}] for ${name} but received ${describe(v)}`);
  }
  return v;
}

export class Trainer extends EventEmitter<TrainerEvents> {
  readonly model: Model;
  readonly outputDir: string | null;
  readonly totalSteps: number;
  private readonly opts: TrainerOptions;
  private readonly gradAccum: number;
  private readonly epochs: number;
  private readonly hyper: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; maxGradNorm: number; minLrRatio: number; warmupSteps: number; schedule: ScheduleName };
  private readonly schedule: Schedule;
  private readonly evalEvery: number;
  private readonly evalBatches: number;
  private readonly saveEvery: number;
  private readonly keepLast: number;
  private running = false;

  constructor(opts: TrainerOptions) {
    super();
    if (opts === null || typeof opts !== 'object') throw new InstillError(ErrorCode.ARG, `Expected trainer options { model, train, ... } but received ${describe(opts)}`);
    if (!opts.model || typeof opts.model.lossAndGrads !== 'function') throw new InstillError(ErrorCode.ARG, `Expected a Model for model but received ${describe(opts.model)}`);
    if (!opts.model.loraConfig && !opts.model.fullTraining) {
      throw new InstillError(ErrorCode.ARG, "the model has nothing to train: call model.addLora({ r, alpha, targetModules }) (or model.setTrainable('all') for full fine-tuning) before creating the Trainer");
    }
    if (!opts.train || typeof opts.train.iterate !== 'function') throw new InstillError(ErrorCode.ARG, `Expected a BatchLoader for train but received ${describe(opts.train)}`);
    this.opts = opts;
    this.model = opts.model;
    this.outputDir = opts.outputDir ?? null;
    this.gradAccum = int('gradAccum', opts.gradAccum, 1, 1);
    const maxSteps = opts.maxSteps === undefined ? undefined : int('maxSteps', opts.maxSteps, 1, 1);
    this.epochs = maxSteps !== undefined ? Infinity : int('epochs', opts.epochs, 1, 1);
    if (maxSteps !== undefined) this.totalSteps = maxSteps;
    else {
      let micro = 0;
      for (let e = 0; e < this.epochs; e++) micro += opts.train.batchesInEpoch(e);
      this.totalSteps = Math.ceil(micro / this.gradAccum);
    }
    const schedule = opts.schedule ?? 'linear';
    if (!(SCHEDULES as readonly string[]).includes(schedule)) throw new InstillError(ErrorCode.ARG, `Expected one of ${SCHEDULES.join(', ')} for schedule but received ${describe(schedule)}`);
    const warmupSteps = warmupStepsOf(this.totalSteps, opts.warmupSteps === undefined ? undefined : int('warmupSteps', opts.warmupSteps, 0, 0), opts.warmupRatio);
    this.hyper = {
      lr: num('lr', opts.lr, 0, 10, 2e-4),
      beta1: num('beta1', opts.beta1, 0, 1, 0.9),
      beta2: num('beta2', opts.beta2, 0, 1, 0.999),
      eps: num('eps', opts.eps, 0, 1, 1e-8, true),
      weightDecay: num('weightDecay', opts.weightDecay, 0, 1e6, 0),
      maxGradNorm: num('maxGradNorm', opts.maxGradNorm, 0, Infinity, 1),
      minLrRatio: num('minLrRatio', opts.minLrRatio, 0, 1, 0),
      warmupSteps,
      schedule,
    };
    this.schedule = createSchedule({ name: schedule, lr: this.hyper.lr, totalSteps: this.totalSteps, warmupSteps, minLrRatio: this.hyper.minLrRatio });
    this.evalEvery = int('evalEvery', opts.evalEvery, 0, 0);
    this.evalBatches = int('evalBatches', opts.evalBatches, 0, 0);
    this.saveEvery = int('saveEvery', opts.saveEvery, 0, 0);
    this.keepLast = int('keepLast', opts.keepLast, 0, 0);
    if (opts.resumeFrom && !this.outputDir && opts.resumeFrom === 'latest') {
      throw new InstillError(ErrorCode.ARG, "resumeFrom: 'latest' needs an outputDir to look in");
    }
  }

  /** Learning rate of (0-based) step `step`. */
  lrAt(step: number): number {
    return this.schedule(step);
  }

  /** The settings that decide the trajectory (a resume must use the same). */
  private fingerprint(): Record<string, unknown> {
    const lora = this.model.loraConfig;
    return {
      totalSteps: this.totalSteps,
      epochs: Number.isFinite(this.epochs) ? this.epochs : null,
      gradAccum: this.gradAccum,
      ...this.hyper,
      lora: lora ? { r: lora.r, alpha: lora.alpha, targetModules: lora.targetModules, rsLora: lora.rsLora, dropout: lora.dropout } : 'full',
      trainBatchesEpoch0: this.opts.train.batchesInEpoch(0),
      seeds: this.seeds(),
    };
  }

  private seeds(): { seed: number; dataSeed: number; loraSeed: number } {
    const s = this.opts.seeds ?? {};
    const seed = s.seed ?? 0;
    return { seed, dataSeed: s.data ?? seed, loraSeed: s.lora ?? seed };
  }

  /** Mean validation loss per target token over the validation loader (or its first evalBatches batches). */
  async evaluate(): Promise<EvalEvent | null> {
    const v = this.opts.validation;
    if (!v) return null;
    let sum = 0;
    let tokens = 0;
    let k = 0;
    for (const { batch } of v.iterate({ epoch: 0, position: 0 }, 1)) {
      if (this.evalBatches && k >= this.evalBatches) break;
      k++;
      if (batch.numTargets === 0) continue;
      const r = await this.model.loss(engineBatch(batch));
      sum += r.loss * r.tokens;
      tokens += r.tokens;
    }
    return { step: 0, loss: tokens ? sum / tokens : NaN, tokens };
  }

  private async resolveResume(): Promise<LoadedCheckpoint | null> {
    const from = this.opts.resumeFrom;
    if (!from) return null;
    if (from === 'latest') return loadLatestCheckpoint(this.outputDir!);
    return loadCheckpoint(from);
  }

  private checkResumable(ck: LoadedCheckpoint): void {
    const now = JSON.parse(JSON.stringify(this.fingerprint())) as Record<string, unknown>;
    const then = ck.state.config;
    const diffs: string[] = [];
    for (const k of Object.keys(now)) {
      if (JSON.stringify(now[k]) !== JSON.stringify(then?.[k])) diffs.push(`${k}: checkpoint ${JSON.stringify(then?.[k])}, now ${JSON.stringify(now[k])}`);
    }
    if (diffs.length) {
      throw new InstillError(ErrorCode.ARG, `cannot resume from ${ck.dir}: the run's settings differ (${diffs.join('; ')}). Use the settings of the stopped run, or start a new output folder`);
    }
  }

  /** Runs the training to its end (or until the signal aborts); resolves with the outcome. */
  async train(): Promise<TrainResult> {
    if (this.running) throw new InstillError(ErrorCode.ARG, 'this Trainer is already running');
    this.running = true;
    try {
      return await this.run();
    } finally {
      this.running = false;
    }
  }

  private async run(): Promise<TrainResult> {
    const model = this.model;
    const out = this.outputDir;
    const signal = this.opts.signal;
    let step = 0;
    let cursor: DataCursor = { epoch: 0, position: 0 };
    let microBatches = 0;
    let targetTokensTotal = 0;
    let elapsedBefore = 0;
    let lastTrainLoss: number | null = null;
    let lastEvalLoss: number | null = null;
    let initialEvalLoss: number | null = null;
    let lastEvalStep = -1;
    let lastSaveStep = -1;
    let lastCheckpoint: string | null = null;

    const ck = await this.resolveResume();
    if (!ck && out && (await listCheckpoints(out)).length > 0) {
      throw new InstillError(ErrorCode.ARG, `${out} already holds checkpoints of another run: pass resumeFrom: 'latest' to continue it, or choose another outputDir`);
    }
    const full = model.fullTraining;
    if (ck) {
      this.checkResumable(ck);
      const f = SafetensorsFile.open(join(ck.dir, full ? MODEL_FILE : ADAPTER_FILE));
      try {
        const rec: Record<string, Float32Array> = {};
        for (const n of f.names()) rec[n] = f.readArray(n) as Float32Array;
        if (full) model.setWeights(rec);
        else model.setAdapterWeights(rec);
      } finally {
        f.close();
      }
      step = ck.state.step;
      cursor = ck.state.cursor;
      microBatches = ck.state.microBatches;
      targetTokensTotal = ck.state.targetTokens;
      elapsedBefore = ck.state.elapsedSeconds;
      lastTrainLoss = ck.state.lastTrainLoss;
      lastEvalLoss = ck.state.lastEvalLoss;
      lastSaveStep = step;
      lastCheckpoint = ck.dir;
      if (step >= this.totalSteps) lastEvalStep = step; // a finished run: its final evaluation is in metrics.jsonl
    }
    // Moments of the checkpoint, or none: a fresh run starts from zero moments even on a model trained before.
    model.setOptimizerState(ck ? ck.optimizer : { step: 0, m: {}, v: {} });

    let metrics: MetricsLog | null = null;
    if (out) {
      await mkdir(out, { recursive: true });
      metrics = new MetricsLog(join(out, 'metrics.jsonl'));
      await metrics.truncateAfter(step);
    }

    const t0 = performance.now();
    const elapsed = () => elapsedBefore + (performance.now() - t0) / 1000;
    let tokensThisRun = 0;

    const doEval = async () => {
      const e = await this.evaluate();
      if (!e) return;
      e.step = step;
      lastEvalLoss = e.loss;
      lastEvalStep = step;
      if (initialEvalLoss === null) initialEvalLoss = e.loss;
      metrics?.append({ type: 'eval', step, loss: e.loss, tokens: e.tokens });
      this.emit('eval', e);
    };

    const doSave = async () => {
      if (!out) return;
      await metrics?.flush();  // the lines of the steps it holds are on disk before it is
      const state: TrainerState = {
        format: 'instill-trainer-state',
        version: 1,
        step,
        totalSteps: this.totalSteps,
        cursor,
        microBatches,
        targetTokens: targetTokensTotal,
        rng: this.seeds(),
        config: { ...JSON.parse(JSON.stringify(this.fingerprint())), extra: this.opts.extraConfig ?? null },
        lastTrainLoss,
        lastEvalLoss,
        elapsedSeconds: elapsed(),
        savedAt: new Date().toISOString(),
      };
      const base = this.opts.baseModelNameOrPath;
      const dir = await saveCheckpoint(
        out,
        {
          state,
          optimizer: model.optimizerState(),
          writeWeights: (d) => (full ? model.writeModelFiles(d) : model.saveAdapter(d, base !== undefined ? { baseModelNameOrPath: base } : {})),
        },
        this.keepLast,
      );
      lastSaveStep = step;
      lastCheckpoint = dir;
      this.emit('checkpoint', { step, dir });
    };

    if (step === 0 && this.opts.validation) await doEval();

    const it: Iterator<LoadedBatch> = this.opts.train.iterate(cursor, this.epochs);
    let exhausted = false;
    // A step's micro-batches (fewer at the data's end). The next step's are assembled while this step's last
    // lossAndGrads runs off the JS thread (`pending`), so the data's host work does not sit between two steps on the
    // device. Nothing of them is saved before they have run: a checkpoint holds the cursor after the last step done,
    // and a resume assembles the same batches again from it.
    const pull = (): LoadedBatch[] => {
      const w: LoadedBatch[] = [];
      while (w.length < this.gradAccum && !exhausted) {
        const r = it.next();
        if (r.done) exhausted = true;
        else w.push(r.value);
      }
      return w;
    };
    let pending: LoadedBatch[] | null = null;
    const lora = model.loraConfig;  // (a copy: read once, not every step)
    const flopsLora = lora ? { rank: lora.r, targets: lora.targetModules } : null;
    let aborted = signal?.aborted === true;
    try {
      while (!aborted && step < this.totalSteps) {
        const ts = performance.now();
        const window = pending ?? pull();
        pending = null;
        if (window.length === 0) break;
        let N = 0;
        let tokens = 0;
        let flops = 0;
        for (const w of window) {
          N += w.batch.numTargets;
          tokens += w.batch.numTokens;
          flops += trainingFlops(model.spec, flopsLora, exampleLengths(w.batch));
        }
        const lr = this.schedule(step);
        let loss = 0;
        let gradNorm = 0;
        if (N > 0) {
          let first = true;
          try {
            for (let k = 0; k < window.length; k++) {
              const w = window[k];
              if (w.batch.numTargets === 0) continue;
              const dropoutSeed = dropoutSeedOf(this.seeds().seed, microBatches + k);
              const running = model.lossAndGrads(engineBatch(w.batch), { normalizer: N, accumulate: !first, returnGrads: false, dropoutSeed });
              if (k === window.length - 1 && step + 1 < this.totalSteps) pending = pull();  // while it runs
              const r = await running;
              first = false;
              loss += r.loss;
            }
          } catch (err) {
            // A forward or backward failed (out of GPU memory on a long batch, say): nothing of this step reached the
            // weights or the optimizer, so the run up to the last finished step is saved first, to resume from.
            if (out && step > 0 && lastSaveStep !== step) {
              try {
                await doSave();
              } catch {
                // the original error says more
              }
            }
            if (!(err instanceof InstillError) || !lastCheckpoint || lastSaveStep !== step) throw err;
            throw new InstillError(
              err.code,
              `${err.message} (in step ${step + 1}; the run up to step ${step} is saved in ${lastCheckpoint}: resume it from there)`,
              { cause: err },
            );
          }
          // A loss or norm that is not finite updates nothing (the engine checks the norm itself).
          if (Number.isFinite(loss)) {
            gradNorm = (await model.optimizerStep({ lr, beta1: this.hyper.beta1, beta2: this.hyper.beta2, eps: this.hyper.eps, weightDecay: this.hyper.weightDecay, maxGradNorm: this.hyper.maxGradNorm })).gradNorm;
          }
          if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
            throw new InstillError(
              ErrorCode.RANGE,
              `step ${step + 1}: the loss (${loss}) or gradient norm (${gradNorm}) is not finite; lower the learning rate (now ${lr}) or set maxGradNorm` +
                (lastCheckpoint ? `, and resume from ${lastCheckpoint}` : ''),
            );
          }
        }
        // A window without target tokens (possible only with hand-made loaders) is consumed without an update.
        step++;
        microBatches += window.length;
        targetTokensTotal += N;
        tokensThisRun += tokens;
        cursor = window[window.length - 1].next;
        lastTrainLoss = loss;
        const dt = (performance.now() - ts) / 1000;
        const el = elapsed();
        const runSteps = step - (ck?.state.step ?? 0);
        const ev: StepEvent = {
          step,
          totalSteps: this.totalSteps,
          epoch: window[window.length - 1].cursor.epoch,
          loss,
          lr,
          gradNorm,
          targetTokens: N,
          tokens,
          tokensPerSec: dt > 0 ? tokens / dt : 0,
          flops,
          flopsPerSec: dt > 0 ? flops / dt : 0,
          elapsedSeconds: el,
          etaSeconds: ((el - elapsedBefore) / runSteps) * (this.totalSteps - step),
        };
        metrics?.append({ type: 'train', step, epoch: ev.epoch, loss, lr, grad_norm: gradNorm, tokens, tokens_per_sec: ev.tokensPerSec, model_tflops: ev.flopsPerSec / 1e12, elapsed_s: el });
        this.emit('step', ev);
        aborted = signal?.aborted === true;
        const last = step >= this.totalSteps || aborted;
        if (this.evalEvery > 0 && step % this.evalEvery === 0 && !last) await doEval();
        if (this.saveEvery > 0 && step % this.saveEvery === 0 && !last) await doSave();
      }
    } catch (err) {
      await metrics?.flush().catch(() => {});  // the finished steps' lines on disk before the error goes up
      throw err;
    }

    const completed = !aborted;
    if (completed && this.opts.validation && lastEvalStep !== step) await doEval();
    if (out && lastSaveStep !== step && step > 0) await doSave();
    if (out && completed && lastCheckpoint) await this.publishFinal(lastCheckpoint, out);
    if (out) {
      await metrics?.flush();
      await this.writePlot(out);
    }
    const el = elapsed();
    const result: TrainResult = {
      reason: completed ? 'completed' : 'aborted',
      step,
      totalSteps: this.totalSteps,
      trainLoss: lastTrainLoss,
      evalLoss: lastEvalLoss,
      initialEvalLoss,
      checkpoint: lastCheckpoint,
      outputDir: out,
      elapsedSeconds: el,
      tokensPerSec: el - elapsedBefore > 0 ? tokensThisRun / (el - elapsedBefore) : 0,
    };
    this.emit('done', result);
    return result;
  }

  /** Copies the final adapter (full mode: model) files to the output folder itself (each via a temporary name + rename). */
  private async publishFinal(checkpoint: string, out: string): Promise<void> {
    const files = this.model.fullTraining ? (await readdir(checkpoint)).filter((f) => f !== OPTIMIZER_FILE && f !== TRAINER_STATE_FILE) : [ADAPTER_FILE, ADAPTER_CONFIG_FILE];
    for (const f of files) {
      const tmp = join(out, `${f}.tmp-${process.pid}`);
      await copyFile(join(checkpoint, f), tmp);
      await rename(tmp, join(out, f));
    }
  }

  private async writePlot(out: string): Promise<void> {
    const path = join(out, 'metrics.jsonl');
    if (!existsSync(path)) return;
    const ms = readMetrics(path);
    const train = ms.filter((m) => m.type === 'train').map((m) => [m.step, m.loss] as [number, number]);
    const val = ms.filter((m) => m.type === 'eval').map((m) => [m.step, m.loss] as [number, number]);
    const tmp = join(out, `loss.svg.tmp-${process.pid}`);
    await writeFile(tmp, lossCurveSvg(train, val, 'loss per target token'));
    await rename(tmp, join(out, 'loss.svg'));
  }
}
