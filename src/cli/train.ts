// `instill train [--config FILE.yaml] [flags]`: LoRA instruction tuning from the command line.
//
// Output modes: a live progress line on a terminal (a line every ~5% of the run otherwise), --quiet
// (errors and the output folder only), --jsonl (one JSON event per line on stdout: start, step, eval,
// checkpoint, exact_match, done). SIGINT/SIGTERM: the step in progress finishes, a checkpoint is saved,
// and the process exits with 130/143; a second signal exits at once.
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ErrorCode, InstillError } from '../errors.js';
import { gpuPeakTflops } from '../model/flops.js';
import { runtime } from '../runtime.js';
import { OPTIONS, optionsHelp, parseArgsOptions, readConfigFile, resolveTrainConfig, type OptionName, type RawSettings } from '../train/config.js';
import { listCheckpoints } from '../train/checkpoint.js';
import { exactMatch, type ExactMatchResult } from '../train/exact_match.js';
import { readMetrics } from '../train/metrics.js';
import { prepareTraining } from '../train/session.js';
import type { StepEvent, TrainResult } from '../train/trainer.js';

const USAGE = `usage: instill train [--config FILE.yaml] --model DIR --data FILE --output DIR [options]

Trains a LoRA adapter on instruction data and writes it in PEFT layout (adapter_model.safetensors +
adapter_config.json) to --output (--full: trains every weight and writes the whole model, config.json +
model.safetensors + tokenizer files), with checkpoints (checkpoint-<step>/), metrics.jsonl, loss.svg and
summary.json. Every option can also be a key of the YAML file (same name; flags win).
Ctrl-C stops after the current step and saves a checkpoint; --resume continues it exactly. A step that fails
(out of GPU memory, say) first saves the run up to the step before it.

options:
${optionsHelp()}`;

export function fmtDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}` : `${m}:${String(sec).padStart(2, '0')}`;
}

/** Model TFLOP/s: 3 significant digits under 100 (a CPU's step is well under 1), whole numbers above. */
export function fmtTflops(x: number): string {
  return x >= 100 ? x.toFixed(0) : x.toPrecision(3);
}

/** An MFU (a fraction) as a percentage: one decimal from 10%, 3 significant digits under it. */
export function fmtMfu(x: number): string {
  return `${x >= 0.1 ? (100 * x).toFixed(1) : (100 * x).toPrecision(3)}%`;
}

function fmtRate(x: number): string {
  return x >= 1e6 ? `${(x / 1e6).toFixed(1)}M` : x >= 1e3 ? `${(x / 1e3).toFixed(1)}k` : x.toFixed(0);
}

/** On a GPU (gpu given): the step's model TFLOP/s after its tokens/s, and its MFU where the GPU's peak is known. */
export function progressLine(e: StepEvent, evalLoss: number | null, gpu?: { peakTflops: number | null }): string {
  const w = String(e.totalSteps).length;
  let rate = '';
  if (gpu) {
    const tflops = e.flopsPerSec / 1e12;
    rate = `  ${fmtTflops(tflops)} TFLOP/s` + (gpu.peakTflops ? ` (${fmtMfu(tflops / gpu.peakTflops)} MFU)` : '');
  }
  return (
    `step ${String(e.step).padStart(w)}/${e.totalSteps}  loss ${e.loss.toFixed(4)}  lr ${e.lr.toExponential(2)}  ` +
    `${fmtRate(e.tokensPerSec)} tok/s${rate}  ETA ${fmtDuration(e.etaSeconds)}` +
    (evalLoss !== null ? `  val ${evalLoss.toFixed(4)}` : '')
  );
}

function flagsFrom(values: Record<string, unknown>): RawSettings {
  const out: RawSettings = {};
  for (const [k, spec] of Object.entries(OPTIONS) as [OptionName, { kind: string }][]) {
    if (k === 'config') continue;
    if (spec.kind === 'bool') {
      if (values[`no-${k}`]) out[k] = false;
      else if (values[k]) out[k] = true;
    } else if (values[k] !== undefined) out[k] = values[k] as string | string[];
  }
  return out;
}

function emTable(before: ExactMatchResult, after: ExactMatchResult, rows = 8): string {
  const pct = (r: ExactMatchResult) => `${r.correct}/${r.total} (${(100 * r.score).toFixed(0)}%)`;
  const ans = (r: ExactMatchResult) => `${r.answered}/${r.total} (${(100 * r.answerScore).toFixed(0)}%)`;
  const lines = [
    `exact match on ${after.total} held-out instructions: base ${pct(before)} -> tuned ${pct(after)}`,
    `answer match (starts with the answer, then a word boundary): base ${ans(before)} -> tuned ${ans(after)}`,
  ];
  const clip = (s: string, n: number) => (s.length > n ? s.slice(0, n - 1) + '…' : s).replace(/\n/g, ' ');
  lines.push(`  ${'instruction'.padEnd(28)} ${'expected'.padEnd(16)} ${'base'.padEnd(20)} tuned`);
  for (let i = 0; i < Math.min(rows, after.items.length); i++) {
    const a = before.items[i], b = after.items[i];
    lines.push(`  ${clip(b.prompt, 28).padEnd(28)} ${clip(b.expected, 16).padEnd(16)} ${(clip(a.got, 17) + (a.ok ? ' ✓' : a.answerOk ? ' ~' : ' ✗')).padEnd(20)} ${clip(b.got, 17)}${b.ok ? ' ✓' : b.answerOk ? ' ~' : ' ✗'}`);
  }
  return lines.join('\n');
}

export async function run(argv: string[]): Promise<number> {
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({ args: argv, options: { ...parseArgsOptions(), help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new InstillError(ErrorCode.ARG, `${(err as Error).message}\n\n${USAGE}`);
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const file = typeof values.config === 'string' ? readConfigFile(values.config) : {};
  const cfg = resolveTrainConfig(file, flagsFrom(values));
  const mode: 'jsonl' | 'quiet' | 'tty' | 'plain' = cfg.jsonl ? 'jsonl' : cfg.quiet ? 'quiet' : process.stderr.isTTY ? 'tty' : 'plain';
  const emit = (event: string, data: object) => {
    if (mode === 'jsonl') process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
  };
  const say = (line: string) => {
    if (mode === 'tty' || mode === 'plain') process.stderr.write(line + '\n');
  };

  if (!cfg.resume && !cfg.resumeFrom && (await listCheckpoints(cfg.output)).length > 0) {
    throw new InstillError(ErrorCode.ARG, `${cfg.output} already holds checkpoints: pass --resume to continue that run, or choose another --output`);
  }

  const ac = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) process.exit(sig === 'SIGTERM' ? 143 : 130);
    say(`\n${sig}: finishing the current step and saving a checkpoint (again to quit now)`);
    emit('signal', { signal: sig });
    ac.abort(sig);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const p = await prepareTraining(cfg, { signal: ac.signal, log: say });
    const t = p.trainer;
    const acts = p.model.activations.dtype;
    say(`model ${cfg.model}: ${cfg.full ? 'full fine-tuning (every weight)' : `LoRA r=${cfg.loraR} alpha=${cfg.loraAlpha} on ${cfg.targetModules.join(',')}`}; ` +
      `${cfg.dtype} weights, ${acts} activations on ${cfg.device}; ${t.totalSteps} steps of ${cfg.batchSize}×${cfg.gradAccum} rows`);
    const gpuInfo = cfg.device === 'cuda' ? runtime.info().cuda : undefined;
    if (gpuInfo) say(`GPU ${gpuInfo.name} (compute capability ${gpuInfo.computeCapability}); matrix products: ${gpuInfo.gemm}`);
    emit('start', { totalSteps: t.totalSteps, output: cfg.output, trainExamples: p.train.size, validationExamples: p.validation?.size ?? null,
      device: cfg.device, gpu: gpuInfo ? { name: gpuInfo.name, gemm: gpuInfo.gemm } : null, dtype: cfg.dtype, activations: acts });

    let before: ExactMatchResult | null = null;
    if (p.evalPairs.length && p.template) {
      before = await exactMatch(p.model, p.tokenizer, p.template, p.evalPairs, { maxNewTokens: cfg.maxNewTokens });
      emit('exact_match', { when: 'before', score: before.score, correct: before.correct, total: before.total, answered: before.answered });
    }

    let lastEval: number | null = null;
    let lastPrinted = 0;
    // on a GPU the progress says the model TFLOP/s too, and the MFU of the GPU's dense bf16 peak where it is known
    const gpu = gpuInfo ? { peakTflops: gpuPeakTflops(gpuInfo.name) } : undefined;
    const every = Math.max(1, Math.floor(t.totalSteps / 20));
    t.on('step', (e) => {
      emit('step', e);
      if (mode === 'tty') process.stderr.write(`\r\x1b[K${progressLine(e, lastEval, gpu)}`);
      else if (mode === 'plain' && (e.step - lastPrinted >= every || e.step === e.totalSteps || e.step === 1)) {
        lastPrinted = e.step;
        say(progressLine(e, lastEval, gpu));
      }
    });
    t.on('eval', (e) => {
      lastEval = e.loss;
      emit('eval', e);
      if (mode === 'tty' && e.step === 0) say(`validation loss before training: ${e.loss.toFixed(4)}`);
    });
    t.on('checkpoint', (e) => emit('checkpoint', e));
    // on a GPU, the training's peak of the allocator's live bytes (the model's weights included), for sizing batches
    if (gpuInfo) runtime.deviceMemory('cuda', { resetPeak: true });
    const result: TrainResult = await t.train();
    const peakGpuBytes = gpuInfo ? runtime.deviceMemory('cuda').peak : null;
    if (mode === 'tty') process.stderr.write('\n');

    let after: ExactMatchResult | null = null;
    if (before && p.template && result.reason === 'completed') {
      after = await exactMatch(p.model, p.tokenizer, p.template, p.evalPairs, { maxNewTokens: cfg.maxNewTokens });
      emit('exact_match', { when: 'after', score: after.score, correct: after.correct, total: after.total, answered: after.answered });
    }
    const ms = readMetrics(join(cfg.output, 'metrics.jsonl'));
    const trainLosses = ms.filter((m) => m.type === 'train').map((m) => m.loss);
    const evalLosses = ms.filter((m) => m.type === 'eval').map((m) => m.loss);
    const summary = {
      reason: result.reason,
      step: result.step,
      totalSteps: result.totalSteps,
      elapsedSeconds: result.elapsedSeconds,
      tokensPerSec: result.tokensPerSec,
      peakGpuBytes,
      trainLossFirst: trainLosses[0] ?? null,
      trainLossLast: trainLosses.at(-1) ?? null,
      evalLossFirst: evalLosses[0] ?? null,
      evalLossLast: evalLosses.at(-1) ?? null,
      exactMatchBefore: before ? { correct: before.correct, answered: before.answered, total: before.total, score: before.score, answerScore: before.answerScore } : null,
      exactMatchAfter: after ? { correct: after.correct, answered: after.answered, total: after.total, score: after.score, answerScore: after.answerScore } : null,
      checkpoint: result.checkpoint,
      adapter: result.reason === 'completed' && !cfg.full ? cfg.output : null,
      model: result.reason === 'completed' && cfg.full ? cfg.output : null,
    };
    if (existsSync(cfg.output)) await writeFile(join(cfg.output, 'summary.json'), JSON.stringify({ ...summary, exactMatchItems: after?.items ?? null }, null, 2) + '\n');
    emit('done', summary);
    if (mode === 'quiet') console.log(result.reason === 'completed' ? cfg.output : (result.checkpoint ?? ''));
    if (mode === 'tty' || mode === 'plain') {
      const f = (x: number | null) => (x === null ? '-' : x.toFixed(4));
      const lines = [
        result.reason === 'completed'
          ? `done: ${result.step}/${result.totalSteps} steps in ${fmtDuration(result.elapsedSeconds)} (${fmtRate(result.tokensPerSec)} tok/s` +
            (peakGpuBytes !== null ? `, peak GPU memory ${(peakGpuBytes / 2 ** 30).toFixed(2)} GiB)` : ')')
          : `stopped at step ${result.step}/${result.totalSteps}; checkpoint ${result.checkpoint ?? '(none: no step finished)'}. Continue with the same command and --resume`,
        `train loss ${f(summary.trainLossFirst)} -> ${f(summary.trainLossLast)}` + (evalLosses.length ? `   validation loss ${f(summary.evalLossFirst)} -> ${f(summary.evalLossLast)}` : ''),
      ];
      if (before && after) lines.push(emTable(before, after));
      if (result.reason === 'completed') lines.push(cfg.full ? `model: ${cfg.output} (config.json + model.safetensors, Hugging Face layout)` : `adapter: ${join(cfg.output, 'adapter_model.safetensors')} (+ adapter_config.json)`, `metrics: ${join(cfg.output, 'metrics.jsonl')}   curve: ${join(cfg.output, 'loss.svg')}`);
      say(lines.join('\n'));
    }
    if (result.reason === 'aborted') return ac.signal.reason === 'SIGTERM' ? 143 : 130;
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
