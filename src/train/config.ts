// The settings of a training run, from a YAML file and/or command-line flags.
//
// One table (OPTIONS) names every setting once: its flag (`--lora-r`), its YAML key (the same name;
// snake_case and nested sections are accepted: `lora: { r: 8 }` = `lora_r: 8` = `lora-r: 8`), its type,
// default and help line. Flags override the file. Unknown keys and ill-typed values are errors that
// name the key and what it takes.
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ErrorCode, InstillError, describe } from '../errors.js';
import { DATASET_FORMATS } from '../data/formats.js';
import { TRAIN_ON } from '../data/masking.js';
import { TRUNCATIONS } from '../data/truncation.js';
import { ACTIVATION_MODES, LORA_TARGETS, type ActivationMode } from '../model/model.js';
import { SCHEDULES } from './schedule.js';

type Kind = 'string' | 'strings' | 'int' | 'number' | 'bool' | 'enum';

interface OptionSpec {
  kind: Kind;
  help: string;
  values?: readonly string[];
  min?: number;
  max?: number;
  /** A flag that takes no value on the command line (booleans). */
}

export const OPTIONS = {
  config: { kind: 'string', help: 'YAML file with any of these settings (flags override it)' },
  model: { kind: 'string', help: 'model folder (Hugging Face layout) or Hub id  [required]' },
  data: { kind: 'strings', help: 'training data: .jsonl/.json/.parquet; repeat for several  [required]' },
  'eval-data': { kind: 'strings', help: 'held-out data for the validation loss (else --validation splits the training data)' },
  validation: { kind: 'number', min: 0, help: 'held-out part of --data when there is no --eval-data: a fraction < 1 or a count (default 0)' },
  output: { kind: 'string', help: 'output folder: checkpoints, metrics.jsonl, loss.svg, the final adapter  [required]' },
  template: { kind: 'string', help: "chat template: chatml | alpaca | llama3 | zephyr | model | FILE.jinja (default: the model's own)" },
  format: { kind: 'enum', values: DATASET_FORMATS, help: `dataset format: ${DATASET_FORMATS.join(' | ')} (default: detected)` },
  'train-on': { kind: 'enum', values: TRAIN_ON, help: 'which tokens are trained: assistant | all | last (default assistant)' },
  'max-seq-len': { kind: 'int', min: 2, help: "tokens per row (default: the model's context, at most 4096)" },
  truncation: { kind: 'enum', values: TRUNCATIONS, help: 'longer examples: right | left | drop (default right)' },
  packing: { kind: 'bool', help: 'pack several examples per row (default true; --no-packing pads instead)' },
  'batch-size': { kind: 'int', min: 1, help: 'rows per micro-batch (default 4)' },
  'grad-accum': { kind: 'int', min: 1, help: 'micro-batches per optimizer step (default 1)' },
  epochs: { kind: 'int', min: 1, help: 'passes over the data (default 1)' },
  'max-steps': { kind: 'int', min: 1, help: 'optimizer steps; overrides --epochs' },
  lr: { kind: 'number', min: 0, help: 'peak learning rate (default 2e-4)' },
  schedule: { kind: 'enum', values: SCHEDULES, help: 'constant | linear | cosine (default cosine)' },
  'warmup-steps': { kind: 'int', min: 0, help: 'linear warmup steps (default 0)' },
  'warmup-ratio': { kind: 'number', min: 0, max: 0.999, help: 'warmup as a fraction of all steps' },
  'min-lr-ratio': { kind: 'number', min: 0, max: 1, help: 'final lr / peak lr for linear and cosine (default 0)' },
  'weight-decay': { kind: 'number', min: 0, help: 'AdamW weight decay (default 0)' },
  'adam-beta1': { kind: 'number', min: 0, max: 0.999999, help: 'AdamW beta1 (default 0.9)' },
  'adam-beta2': { kind: 'number', min: 0, max: 0.999999, help: 'AdamW beta2 (default 0.999)' },
  'adam-eps': { kind: 'number', min: 1e-30, help: 'AdamW epsilon (default 1e-8)' },
  'max-grad-norm': { kind: 'number', min: 0, help: 'clip the global gradient norm (default 1; 0 = off)' },
  'lora-r': { kind: 'int', min: 1, help: 'LoRA rank (default 8)' },
  'lora-alpha': { kind: 'number', min: 1e-9, help: 'LoRA alpha (default 2 × r)' },
  'lora-dropout': { kind: 'number', min: 0, max: 0.999, help: 'LoRA dropout on the adapters\' input (default 0; masks seeded per micro-batch, so resumes match)' },
  'target-modules': { kind: 'strings', values: LORA_TARGETS, help: `LoRA targets, comma-separated: ${LORA_TARGETS.join(',')} (default all)` },
  rslora: { kind: 'bool', help: 'rank-stabilised LoRA scale alpha/sqrt(r)' },
  full: { kind: 'bool', help: 'full fine-tuning (every weight trainable) instead of LoRA' },
  dtype: { kind: 'enum', values: ['f32', 'bf16', 'f16'], help: 'frozen weights in memory: f32 | bf16 | f16 (default bf16 with --device cuda and LoRA, else f32)' },
  device: { kind: 'enum', values: ['cpu', 'cuda'], help: 'where the model trains: cpu | cuda (default cpu; cuda needs a CUDA build and a GPU)' },
  'gradient-checkpointing': { kind: 'bool', help: 'recompute activations in backward (less memory, ~1.3x time)' },
  activations: { kind: 'enum', values: ACTIVATION_MODES, help: 'activation precision: auto | f32 | bf16 | bf16-mlp (default auto: bf16 on cuda with LoRA over bf16 weights, else f32)' },
  seed: { kind: 'int', min: 0, help: 'seed of data order, split and LoRA init (default 0)' },
  'eval-every': { kind: 'int', min: 0, help: 'validation loss every N steps (default: 10 evaluations per run; 0 = only at the end)' },
  'eval-batches': { kind: 'int', min: 0, help: 'at most N validation batches per evaluation (default all)' },
  'exact-match': { kind: 'int', min: 0, help: 'before/after exact match of greedy answers on the first N eval records (default 0 = off)' },
  'max-new-tokens': { kind: 'int', min: 1, help: 'answer length limit for --exact-match (default 32)' },
  'save-every': { kind: 'int', min: 0, help: 'checkpoint every N steps (default 0 = only at the end)' },
  'keep-last': { kind: 'int', min: 0, help: 'keep the newest N checkpoints (default 0 = all)' },
  resume: { kind: 'bool', help: 'continue from the newest checkpoint in --output' },
  'resume-from': { kind: 'string', help: 'continue from this checkpoint folder' },
  threads: { kind: 'int', min: 1, help: 'engine threads (default: all CPUs)' },
  quiet: { kind: 'bool', help: 'print nothing but errors and the output folder' },
  jsonl: { kind: 'bool', help: 'print events as JSON lines on stdout (for services and CI)' },
} as const satisfies Record<string, OptionSpec>;

export type OptionName = keyof typeof OPTIONS;
export type RawSettings = Partial<Record<OptionName, string | number | boolean | string[]>>;

export interface TrainConfig {
  model: string;
  data: string[];
  evalData: string[] | null;
  validation: number;
  output: string;
  template: string | null;
  format: (typeof DATASET_FORMATS)[number] | null;
  trainOn: (typeof TRAIN_ON)[number];
  maxSeqLen: number | null;
  truncation: (typeof TRUNCATIONS)[number];
  packing: boolean;
  batchSize: number;
  gradAccum: number;
  epochs: number;
  maxSteps: number | null;
  lr: number;
  schedule: (typeof SCHEDULES)[number];
  warmupSteps: number;
  warmupRatio: number | null;
  minLrRatio: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  maxGradNorm: number;
  loraR: number;
  loraAlpha: number;
  loraDropout: number;
  targetModules: (typeof LORA_TARGETS)[number][];
  rsLora: boolean;
  full: boolean;
  dtype: 'f32' | 'bf16' | 'f16';
  device: 'cpu' | 'cuda';
  gradientCheckpointing: boolean;
  activations: ActivationMode;
  seed: number;
  evalEvery: number | null;
  evalBatches: number;
  exactMatch: number;
  maxNewTokens: number;
  saveEvery: number;
  keepLast: number;
  resume: boolean;
  resumeFrom: string | null;
  threads: number | null;
  quiet: boolean;
  jsonl: boolean;
}

function coerce(name: OptionName, v: unknown, where: string): string | number | boolean | string[] {
  const spec: OptionSpec = OPTIONS[name];
  const bad = (what: string) => new InstillError(ErrorCode.ARG, `Expected ${what} for ${where} but received ${describe(v)}`);
  switch (spec.kind) {
    case 'string':
      if (typeof v !== 'string' || v === '') throw bad('a non-empty string');
      return v;
    case 'strings': {
      const list = (Array.isArray(v) ? v : [v]).flatMap((x) => (typeof x === 'string' ? x.split(',') : [x])).map((x) => (typeof x === 'string' ? x.trim() : x));
      if (list.length === 0 || list.some((x) => typeof x !== 'string' || x === '')) throw bad('a string or a list of strings');
      if (spec.values) for (const x of list) if (!spec.values.includes(x as string)) throw bad(`one or more of ${spec.values.join(', ')}`);
      return list as string[];
    }
    case 'bool':
      if (typeof v === 'boolean') return v;
      if (v === 'true' || v === 'false') return v === 'true';
      throw bad('true or false');
    case 'enum':
      if (typeof v !== 'string' || !spec.values!.includes(v)) throw bad(`one of ${spec.values!.join(', ')}`);
      return v;
    case 'int':
    case 'number': {
      const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
      const isInt = spec.kind === 'int';
      const lo = spec.min ?? -Infinity, hi = spec.max ?? Infinity;
      if (!Number.isFinite(n) || (isInt && !Number.isInteger(n)) || n < lo || n > hi) {
        const range = hi === Infinity ? `>= ${lo}` : `between ${lo} and ${hi}`;
        throw bad(`${isInt ? 'an integer' : 'a number'} ${range}`);
      }
      return n;
    }
  }
}

/** YAML text -> settings (keys: flag names; snake_case and one level of nesting accepted). */
export function settingsFromYaml(text: string, file: string): RawSettings {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new InstillError(ErrorCode.DATA, `${file} is not valid YAML: ${(err as Error).message}`, { cause: err });
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new InstillError(ErrorCode.DATA, `${file}: expected a mapping of settings at the top level`);
  const out: RawSettings = {};
  const put = (key: string, v: unknown) => {
    const name = key.replace(/_/g, '-');
    if (!(name in OPTIONS) || name === 'config') {
      throw new InstillError(ErrorCode.ARG, `${file}: unknown setting '${key}' (known: ${Object.keys(OPTIONS).filter((k) => k !== 'config').join(', ')})`);
    }
    if (v === null || v === undefined) return;
    out[name as OptionName] = coerce(name as OptionName, typeof v === 'number' || typeof v === 'boolean' || Array.isArray(v) ? v : String(v), `'${key}' in ${file}`);
  };
  for (const [k, v] of Object.entries(doc as Record<string, unknown>)) {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v as Record<string, unknown>)) {
        const nested = `${k}-${k2}`.replace(/_/g, '-');
        put(nested in OPTIONS ? nested : k2, v2);
      }
    } else put(k, v);
  }
  return out;
}

export function readConfigFile(path: string): RawSettings {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new InstillError(ErrorCode.IO, `cannot read config ${path}: ${(err as Error).message}`, { cause: err });
  }
  return settingsFromYaml(text, path);
}

/** Validated settings with defaults. `flags` override `file`. */
export function resolveTrainConfig(file: RawSettings, flags: RawSettings): TrainConfig {
  const raw: RawSettings = { ...file };
  for (const [k, v] of Object.entries(flags)) if (v !== undefined) raw[k as OptionName] = coerce(k as OptionName, v, `--${k}`);
  const g = <T>(k: OptionName, d: T): T => (raw[k] === undefined ? d : (raw[k] as T));
  const need = (k: OptionName): never => {
    throw new InstillError(ErrorCode.ARG, `--${k} is required (or '${k}:' in the config file): ${OPTIONS[k].help.replace(/\s+\[required\]$/, '')}`);
  };
  const model = g<string | undefined>('model', undefined) ?? need('model');
  const data = g<string[] | undefined>('data', undefined) ?? need('data');
  const output = g<string | undefined>('output', undefined) ?? need('output');
  const loraR = g('lora-r', 8);
  const cfg: TrainConfig = {
    model,
    data,
    evalData: g<string[] | null>('eval-data', null),
    validation: g('validation', 0),
    output,
    template: g<string | null>('template', null),
    format: g<TrainConfig['format']>('format', null),
    trainOn: g<TrainConfig['trainOn']>('train-on', 'assistant'),
    maxSeqLen: g<number | null>('max-seq-len', null),
    truncation: g<TrainConfig['truncation']>('truncation', 'right'),
    packing: g('packing', true),
    batchSize: g('batch-size', 4),
    gradAccum: g('grad-accum', 1),
    epochs: g('epochs', 1),
    maxSteps: g<number | null>('max-steps', null),
    lr: g('lr', 2e-4),
    schedule: g<TrainConfig['schedule']>('schedule', 'cosine'),
    warmupSteps: g('warmup-steps', 0),
    warmupRatio: g<number | null>('warmup-ratio', null),
    minLrRatio: g('min-lr-ratio', 0),
    weightDecay: g('weight-decay', 0),
    beta1: g('adam-beta1', 0.9),
    beta2: g('adam-beta2', 0.999),
    eps: g('adam-eps', 1e-8),
    maxGradNorm: g('max-grad-norm', 1),
    loraR,
    loraAlpha: g('lora-alpha', 2 * loraR),
    loraDropout: g('lora-dropout', 0),
    targetModules: g<TrainConfig['targetModules']>('target-modules', [...LORA_TARGETS]),
    rsLora: g('rslora', false),
    full: g('full', false),
    // On a GPU, LoRA defaults to bf16 frozen weights (bf16 tensor-core products, half the memory): the
    // fast path, what a GPU user expects. Full fine-tuning and the CPU stay f32.
    dtype: g<TrainConfig['dtype']>('dtype', g<TrainConfig['device']>('device', 'cpu') === 'cuda' && !g('full', false) ? 'bf16' : 'f32'),
    device: g<TrainConfig['device']>('device', 'cpu'),
    gradientCheckpointing: g('gradient-checkpointing', false),
    activations: g<ActivationMode>('activations', 'auto'),
    seed: g('seed', 0),
    evalEvery: g<number | null>('eval-every', null),
    evalBatches: g('eval-batches', 0),
    exactMatch: g('exact-match', 0),
    maxNewTokens: g('max-new-tokens', 32),
    saveEvery: g('save-every', 0),
    keepLast: g('keep-last', 0),
    resume: g('resume', false),
    resumeFrom: g<string | null>('resume-from', null),
    threads: g<number | null>('threads', null),
    quiet: g('quiet', false),
    jsonl: g('jsonl', false),
  };
  if (cfg.validation >= 1 && !Number.isInteger(cfg.validation)) throw new InstillError(ErrorCode.ARG, `Expected a fraction < 1 or an integer count for --validation but received ${cfg.validation}`);
  if (cfg.quiet && cfg.jsonl) throw new InstillError(ErrorCode.ARG, '--quiet and --jsonl exclude each other: pick one');
  if (cfg.resume && cfg.resumeFrom) throw new InstillError(ErrorCode.ARG, '--resume and --resume-from exclude each other: --resume takes the newest checkpoint in --output');
  return cfg;
}

/** parseArgs option table for the flags (booleans also get a --no-<name> form). */
export function parseArgsOptions(): Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> {
  const o: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {};
  for (const [k, s] of Object.entries(OPTIONS) as [OptionName, OptionSpec][]) {
    if (s.kind === 'bool') {
      o[k] = { type: 'boolean' };
      o[`no-${k}`] = { type: 'boolean' };
    } else o[k] = { type: 'string', multiple: s.kind === 'strings' };
  }
  return o;
}

export function optionsHelp(): string {
  return (Object.entries(OPTIONS) as [string, OptionSpec][])
    .map(([k, s]) => {
      const arg = s.kind === 'bool' ? '' : s.kind === 'strings' ? ' LIST' : s.kind === 'int' || s.kind === 'number' ? ' N' : ' VALUE';
      return `  --${(k + arg).padEnd(26)} ${s.help}`;
    })
    .join('\n');
}
