// `instill data inspect`: what the data layer makes of a dataset, so the user sees what the model learns.
//
// Counts per file (records = examples + dropped + errors; tokens and target tokens of the kept examples;
// truncated; the bad records with file and line) and, for the first examples, the tokens with the trained
// ones marked. The trained text of each run of tokens is decoded from the ids themselves (as the
// difference of two prefix decodes, so a space or a multi-byte character that straddles a boundary is
// shown where the tokens put it), not from the source record.
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { resolveChatTemplate, templateWarnings } from './chat_template.js';
import { loadDataset, sumReports, type FileReport } from './dataset.js';
import { ALPACA_INPUT_SEPARATOR, type DatasetFormat } from './formats.js';
import type { TrainOn } from './masking.js';
import { loadTokenizer, type Tokenizer } from './tokenizer.js';
import { countTargets, type Truncation } from './truncation.js';

/** maxSeqLen when none is given: the model's context (config.json, tokenizer_config.json), at most this. */
export const DEFAULT_MAX_SEQ_LEN_CAP = 4096;

export interface InspectOptions {
  modelDir: string;
  files: string[];
  format?: DatasetFormat;
  /** A name of NAMED_CHAT_TEMPLATES, 'model', or a Jinja file; default the model's own. */
  template?: string;
  trainOn?: TrainOn;
  /** Default: defaultMaxSeqLen(modelDir). */
  maxSeqLen?: number;
  truncation?: Truncation;
  strict?: boolean;
  appendEos?: boolean;
  /** Examples shown per file (default 3). */
  examples?: number;
}

export interface TextSegment {
  text: string;
  trained: boolean;
}

export interface InspectedExample {
  file: string;
  line: number;
  tokens: number;
  targetTokens: number;
  truncated: boolean;
  ids: number[];
  /** Hugging Face label mask: 1 = labels[t] = ids[t] (position 0 is never predicted even when 1). */
  mask: number[];
  /** The decoded tokens in runs; `trained` = the model learns to predict these tokens. */
  segments: TextSegment[];
}

export type Counts = ReturnType<typeof sumReports>;

export interface InspectResult {
  model: string;
  settings: {
    template: string | null;
    format: DatasetFormat | 'auto';
    trainOn: TrainOn;
    maxSeqLen: number;
    truncation: Truncation;
    strict: boolean;
    appendEos: boolean;
    alpacaInputSeparator: string;
  };
  warnings: string[];
  datasets: FileReport[];
  total: Counts;
  examples: InspectedExample[];
}

/** The model's context length (smallest of config.json max_position_embeddings and model_max_length), capped. */
export async function defaultMaxSeqLen(modelDir: string, tokenizer?: Tokenizer): Promise<number> {
  const limits: number[] = [DEFAULT_MAX_SEQ_LEN_CAP];
  const cfgPath = join(modelDir, 'config.json');
  if (existsSync(cfgPath)) {
    try {
      const cfg = JSON.parse(await readFile(cfgPath, 'utf8')) as { max_position_embeddings?: unknown };
      if (typeof cfg.max_position_embeddings === 'number' && cfg.max_position_embeddings > 1) limits.push(cfg.max_position_embeddings);
    } catch {
      // a broken config.json is reported by the model loader; the cap stands here
    }
  }
  if (tokenizer?.modelMaxLength) limits.push(tokenizer.modelMaxLength);
  return Math.min(...limits);
}

export async function inspectData(options: InspectOptions): Promise<InspectResult> {
  const tokenizer = await loadTokenizer(options.modelDir);
  const template = resolveChatTemplate(tokenizer, options.template);
  const maxSeqLen = options.maxSeqLen ?? (await defaultMaxSeqLen(options.modelDir, tokenizer));
  const trainOn = options.trainOn ?? 'assistant';
  const truncation = options.truncation ?? 'right';
  const ds = await loadDataset(options.files, {
    tokenizer,
    template,
    format: options.format,
    trainOn,
    maxSeqLen,
    truncation,
    strict: options.strict,
    appendEos: options.appendEos,
    keepTokens: false,
    // At least 3 per file are kept to check how answers end, even when fewer are shown.
    sample: Math.max(options.examples ?? 3, 3),
  });
  const shown = options.examples ?? 3;
  const perFile = new Map<string, number>();
  const samples = ds.samples.filter((s) => {
    const k = perFile.get(s.file) ?? 0;
    perFile.set(s.file, k + 1);
    return k < shown;
  });
  const usesChat = ds.reports.some((r) => r.format !== 'text');
  const warnings = template !== null && usesChat ? templateWarnings(template, tokenizer) : [];
  const trainOnAnswers = trainOn !== 'all';
  for (const s of ds.samples) {
    const report = ds.reports.find((r) => r.file === s.file);
    if (!trainOnAnswers || report === undefined || report.format === 'text' || s.truncated) continue;
    const last = lastTrained(s.mask);
    if (last >= 0 && !tokenizer.specialIds.has(s.ids[last])) {
      warnings.push(
        `${s.file}:${s.line}: the trained answer ends with ${JSON.stringify(tokenizer.decode([s.ids[last]]))}, not with an end-of-turn/EOS special token: ` +
          `a model trained on it may not learn to stop (check the chat template)`,
      );
      break;
    }
  }
  return {
    model: options.modelDir,
    settings: {
      template: template?.name ?? null,
      format: options.format ?? 'auto',
      trainOn,
      maxSeqLen,
      truncation,
      strict: options.strict === true,
      appendEos: options.appendEos === true,
      alpacaInputSeparator: ALPACA_INPUT_SEPARATOR,
    },
    warnings,
    datasets: ds.reports,
    total: ds.totals(),
    examples: samples.map((s) => ({
      file: s.file,
      line: s.line,
      tokens: s.ids.length,
      targetTokens: countTargets(s.mask),
      truncated: s.truncated,
      ids: Array.from(s.ids),
      mask: Array.from(s.mask),
      // The first token is never predicted, so it is never shown as trained even when it is a label.
      segments: segments(tokenizer, Array.from(s.ids), Uint8Array.from(s.mask, (m, t) => (t === 0 ? 0 : m))),
    })),
  };
}

function lastTrained(mask: Uint8Array): number {
  for (let t = mask.length - 1; t > 0; t--) if (mask[t] === 1) return t;
  return -1;
}

/** Runs of trained / untrained tokens, decoded. */
export function segments(tok: Tokenizer, ids: number[], mask: ArrayLike<number>): TextSegment[] {
  const out: TextSegment[] = [];
  let start = 0;
  let before = '';
  for (let t = 1; t <= ids.length; t++) {
    if (t < ids.length && mask[t] === mask[start]) continue;
    const upTo = tok.decode(ids.slice(0, t));
    const text = upTo.startsWith(before) ? upTo.slice(before.length) : tok.decode(ids.slice(start, t));
    out.push({ text, trained: mask[start] === 1 });
    before = upTo;
    start = t;
  }
  return out;
}

const ANSI = { trained: '\x1b[30;42m', prompt: '\x1b[2m', reset: '\x1b[0m', bold: '\x1b[1m', yellow: '\x1b[33m' };

/** The human-readable report. With color, trained text is black on green and the rest dim; without, trained text is in [[ ]]. */
export function formatInspect(r: InspectResult, options: { color: boolean }): string {
  const c = options.color;
  const L: string[] = [];
  const s = r.settings;
  L.push(`model ${r.model}: template ${s.template ?? '(none)'}, train on ${s.trainOn}, maxSeqLen ${s.maxSeqLen}, truncation ${s.truncation}`);
  for (const w of r.warnings) L.push(`${c ? ANSI.yellow : ''}warning: ${w}${c ? ANSI.reset : ''}`);
  L.push('');
  const header = ['file', 'format', 'records', 'examples', 'tokens', 'targets', 'truncated', 'dropped', 'errors'];
  const rows = r.datasets.map((d) => [d.file, d.format ?? '?', d.records, d.examples, d.tokens, d.targetTokens, d.truncated, d.dropped, d.errors].map(String));
  if (r.datasets.length > 1) {
    const t = r.total;
    rows.push(['total', '', t.records, t.examples, t.tokens, t.targetTokens, t.truncated, t.dropped, t.errors].map(String));
  }
  const width = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const fmt = (row: string[]): string => row.map((v, i) => (i < 2 ? v.padEnd(width[i]) : v.padStart(width[i]))).join('  ');
  L.push(fmt(header));
  for (const row of rows) L.push(fmt(row));
  for (const d of r.datasets) {
    if (d.droppedTooLong + d.droppedNoTargets > 0) {
      L.push(`${d.file}: dropped ${d.droppedTooLong} longer than ${s.maxSeqLen} tokens, ${d.droppedNoTargets} with no token to train on`);
    }
    for (const i of d.issues.slice(0, 10)) L.push(`  skipped ${i.location}: ${i.message}`);
    if (d.errors > 10) L.push(`  ... and ${d.errors - 10} more bad records (--json lists up to 100)`);
  }
  for (const ex of r.examples) {
    L.push('');
    L.push(`${c ? ANSI.bold : ''}${ex.file}:${ex.line}${c ? ANSI.reset : ''}  ${ex.tokens} tokens, ${ex.targetTokens} trained${ex.truncated ? ', TRUNCATED' : ''}`);
    let text = '';
    for (const seg of ex.segments) {
      if (!c) text += seg.trained ? `[[${seg.text}]]` : seg.text;
      else {
        const on = seg.trained ? ANSI.trained : ANSI.prompt;
        // Re-open the style on each line so a background never bleeds past a newline.
        text += seg.text
          .split('\n')
          .map((part) => (part.length > 0 ? on + part + ANSI.reset : ''))
          .join('\n');
      }
    }
    L.push(text);
  }
  if (r.examples.length > 0) {
    L.push('');
    L.push(c ? `legend: ${ANSI.trained}trained${ANSI.reset} ${ANSI.prompt}not trained${ANSI.reset}` : 'legend: [[trained]] not trained');
  }
  return L.join('\n');
}
