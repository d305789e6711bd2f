// Dataset files -> tokenized examples (ids + loss mask), with a report of everything that happened.
//
// Files are streamed record by record (readers.ts); each record is read as its format (formats.ts),
// rendered and masked (masking.ts) and length-checked (truncation.ts). Kept examples go into one compact
// store: all ids in one Int32Array, all mask bits in one Uint8Array (5 bytes per token), never the
// source text. Every record ends up in exactly one count of its file's report:
//     records = examples + dropped + errors
// A bad record (invalid JSON, missing field, non-string content, empty answer) is an error: skipped
// and reported with file and line, or thrown under `strict`. A dataset file with no usable example is
// an error, never a silent success. A chat template whose spans cannot be trusted always throws.
import { ErrorCode, InstillError } from '../errors.js';
import { resolveChatTemplate, type ChatTemplate } from './chat_template.js';
import { detectFormat, toExample, RecordError, DATASET_FORMATS, type DatasetFormat } from './formats.js';
import { maskExample, type TrainOn } from './masking.js';
import { detectFileKind, formatLocation, readRecords, type FileKind, type RawRecord } from './readers.js';
import type { Tokenizer } from './tokenizer.js';
import { applyMaxLength, countTargets, type Truncation } from './truncation.js';

export interface DatasetOptions {
  tokenizer: Tokenizer;
  /** Default: the model's own template (resolveChatTemplate(tokenizer)). */
  template?: ChatTemplate | null;
  /** Default: detected per file, the format most of its first 64 records have. */
  format?: DatasetFormat;
  /** Default 'assistant'. */
  trainOn?: TrainOn;
  maxSeqLen: number;
  /** Default 'right' (keep the start). */
  truncation?: Truncation;
  /** Throw on the first bad record instead of skipping it. */
  strict?: boolean;
  /** Text examples: append EOS even when the tokenizer config does not. Default false. */
  appendEos?: boolean;
  /** Keep the tokens (default true); false only counts (for inspect on large files). */
  keepTokens?: boolean;
  /** Keep the first `sample` kept examples of each file for display, even when keepTokens is false. */
  sample?: number;
  /** Issues kept per file in the report (the count is always exact). Default 100. */
  maxIssues?: number;
}

/** A record that was skipped, and why. */
export interface RecordIssue {
  file: string;
  line: number;
  /** `file:line`, or `file row N` for Parquet. */
  location: string;
  message: string;
}

/** What loading one file did. records = examples + dropped + errors. */
export interface FileReport {
  file: string;
  kind: FileKind;
  format: DatasetFormat | null;
  records: number;
  /** Examples kept. */
  examples: number;
  /** Tokens of the kept examples (after truncation). */
  tokens: number;
  /** Tokens in the loss (labels at positions >= 1 of each kept example). */
  targetTokens: number;
  /** Kept examples that were cut to maxSeqLen. */
  truncated: number;
  /** droppedTooLong + droppedNoTargets. */
  dropped: number;
  /** Longer than maxSeqLen under truncation 'drop'. */
  droppedTooLong: number;
  /** No token left in the loss (no assistant turn, or truncation cut every answer). */
  droppedNoTargets: number;
  /** Bad records skipped. */
  errors: number;
  /** The first maxIssues of them. */
  issues: RecordIssue[];
}

export interface SampleExample {
  file: string;
  line: number;
  ids: Int32Array;
  mask: Uint8Array;
  truncated: boolean;
}

/** Tokenized examples in one compact store. Example i is ids(i) / mask(i). */
export class TokenizedDataset {
  readonly reports: FileReport[];
  readonly samples: SampleExample[];
  private readonly tokenIds: Int32Array;
  private readonly tokenMask: Uint8Array;
  private readonly offsets: Float64Array;
  private readonly fileIndex: Int32Array;
  private readonly lines: Int32Array;

  constructor(parts: {
    reports: FileReport[];
    samples: SampleExample[];
    ids: Int32Array;
    mask: Uint8Array;
    offsets: Float64Array;
    fileIndex: Int32Array;
    lines: Int32Array;
  }) {
    this.reports = parts.reports;
    this.samples = parts.samples;
    this.tokenIds = parts.ids;
    this.tokenMask = parts.mask;
    this.offsets = parts.offsets;
    this.fileIndex = parts.fileIndex;
    this.lines = parts.lines;
  }

  /** Number of examples stored. */
  get size(): number {
    return this.offsets.length - 1;
  }

  length(i: number): number {
    return this.offsets[i + 1] - this.offsets[i];
  }

  /** Token ids of example i (a view: do not modify). */
  ids(i: number): Int32Array {
    return this.tokenIds.subarray(this.offsets[i], this.offsets[i + 1]);
  }

  /** Loss mask of example i (a view: do not modify). */
  mask(i: number): Uint8Array {
    return this.tokenMask.subarray(this.offsets[i], this.offsets[i + 1]);
  }

  source(i: number): { file: string; line: number } {
    return { file: this.reports[this.fileIndex[i]].file, line: this.lines[i] };
  }

  /** Sums of the per-file counts. */
  totals(): Omit<FileReport, 'file' | 'kind' | 'format' | 'issues'> {
    return sumReports(this.reports);
  }
}

export function sumReports(reports: FileReport[]): Omit<FileReport, 'file' | 'kind' | 'format' | 'issues'> {
  const t = { records: 0, examples: 0, tokens: 0, targetTokens: 0, truncated: 0, dropped: 0, droppedTooLong: 0, droppedNoTargets: 0, errors: 0 };
  for (const r of reports) for (const k of Object.keys(t) as Array<keyof typeof t>) t[k] += r[k];
  return t;
}

class GrowingStore {
  ids = new Int32Array(1 << 16);
  mask = new Uint8Array(1 << 16);
  used = 0;
  offsets: number[] = [0];
  fileIndex: number[] = [];
  lines: number[] = [];

  push(ids: ArrayLike<number>, mask: Uint8Array, file: number, line: number): void {
    const need = this.used + ids.length;
    if (need > this.ids.length) {
      let cap = this.ids.length;
      while (cap < need) cap *= 2;
      const ni = new Int32Array(cap);
      ni.set(this.ids.subarray(0, this.used));
      const nm = new Uint8Array(cap);
      nm.set(this.mask.subarray(0, this.used));
      this.ids = ni;
      this.mask = nm;
    }
    this.ids.set(ids, this.used);
    this.mask.set(mask, this.used);
    this.used = need;
    this.offsets.push(need);
    this.fileIndex.push(file);
    this.lines.push(line);
  }
}

const FORMAT_LOOKAHEAD = 64;

/** The format most records of `head` have (the earliest wins a tie); null when none has one. */
function majorityFormat(head: RawRecord[]): DatasetFormat | null {
  const votes = new Map<DatasetFormat, number>();
  for (const r of head) {
    const f = r.error === undefined ? detectFormat(r.value) : null;
    if (f !== null) votes.set(f, (votes.get(f) ?? 0) + 1);
  }
  let best: DatasetFormat | null = null;
  for (const [f, n] of votes) if (best === null || n > (votes.get(best) ?? 0)) best = f;
  return best;
}

/** Reads, templates, tokenizes and masks every record of `files`. */
export async function loadDataset(files: string | string[], options: DatasetOptions): Promise<TokenizedDataset> {
  const list = Array.isArray(files) ? files : [files];
  if (list.length === 0) throw new InstillError(ErrorCode.ARG, 'no dataset file given');
  if (!Number.isInteger(options.maxSeqLen) || options.maxSeqLen < 2) {
    throw new InstillError(ErrorCode.ARG, `Expected integer >= 2 for maxSeqLen but received ${String(options.maxSeqLen)}`);
  }
  const tokenizer = options.tokenizer;
  const template = options.template === undefined ? resolveChatTemplate(tokenizer) : options.template;
  const truncation = options.truncation ?? 'right';
  const keep = options.keepTokens !== false;
  const sampleMax = options.sample ?? 0;
  const maxIssues = options.maxIssues ?? 100;
  const store = new GrowingStore();
  const reports: FileReport[] = [];
  const samples: SampleExample[] = [];

  for (let f = 0; f < list.length; f++) {
    const file = list[f];
    const kind = await detectFileKind(file);
    const report: FileReport = {
      file,
      kind,
      format: options.format ?? null,
      records: 0,
      examples: 0,
      tokens: 0,
      targetTokens: 0,
      truncated: 0,
      dropped: 0,
      droppedTooLong: 0,
      droppedNoTargets: 0,
      errors: 0,
      issues: [],
    };
    reports.push(report);
    let fileSamples = 0;
    const fail = (line: number, message: string): void => {
      const location = formatLocation(file, line, kind);
      if (options.strict === true) throw new InstillError(ErrorCode.DATA, `${location}: ${message} (strict mode: fix the record or run without --strict to skip it)`);
      report.errors++;
      if (report.issues.length < maxIssues) report.issues.push({ file, line, location, message });
    };

    const records = readRecords(file, kind)[Symbol.asyncIterator]();
    // The format is the one most of the first FORMAT_LOOKAHEAD records have (one stray record at the top
    // must not decide how the whole file is read).
    const head: RawRecord[] = [];
    if (report.format === null) {
      while (head.length < FORMAT_LOOKAHEAD) {
        const next = await records.next();
        if (next.done === true) break;
        head.push(next.value);
      }
      report.format = majorityFormat(head);
    }
    for (let k = 0; ; k++) {
      let rec: RawRecord;
      if (k < head.length) rec = head[k];
      else {
        const next = await records.next();
        if (next.done === true) break;
        rec = next.value;
      }
      report.records++;
      if (rec.error !== undefined) {
        fail(rec.line, rec.error);
        continue;
      }
      if (report.format === null) {
        fail(rec.line, `cannot tell the dataset format from this record: expected a 'messages' or 'conversations' list, 'instruction'+'output', 'prompt'+'completion', or 'text' (or pass the format: ${DATASET_FORMATS.join(', ')})`);
        continue;
      }
      let example;
      try {
        example = toExample(rec.value, report.format);
      } catch (err) {
        if (err instanceof RecordError) {
          fail(rec.line, err.message);
          continue;
        }
        throw err;
      }
      let masked;
      try {
        masked = maskExample(example, { tokenizer, template, trainOn: options.trainOn, appendEos: options.appendEos });
      } catch (err) {
        if (err instanceof InstillError) throw new InstillError(err.code, `${formatLocation(file, rec.line, kind)}: ${err.message}`, { cause: err });
        throw err;
      }
      const outcome = applyMaxLength(masked, options.maxSeqLen, truncation);
      if (outcome.kind === 'dropped') {
        report.dropped++;
        if (outcome.reason === 'tooLong') report.droppedTooLong++;
        else report.droppedNoTargets++;
        continue;
      }
      const ex = outcome.example;
      report.examples++;
      report.tokens += ex.ids.length;
      report.targetTokens += countTargets(ex.mask);
      if (outcome.truncated) report.truncated++;
      if (keep) store.push(ex.ids, ex.mask, f, rec.line);
      if (fileSamples < sampleMax) {
        samples.push({ file, line: rec.line, ids: Int32Array.from(ex.ids), mask: ex.mask, truncated: outcome.truncated });
        fileSamples++;
      }
    }

    if (report.examples === 0) {
      const why: string[] = [];
      if (report.records === 0) why.push('it has no records');
      else {
        why.push(`${report.records} record${report.records === 1 ? '' : 's'}`);
        if (report.errors > 0) why.push(`${report.errors} bad (first: ${report.issues[0]?.location}: ${report.issues[0]?.message})`);
        if (report.droppedTooLong > 0) why.push(`${report.droppedTooLong} longer than maxSeqLen ${options.maxSeqLen}`);
        if (report.droppedNoTargets > 0) why.push(`${report.droppedNoTargets} with no token to train on`);
      }
      throw new InstillError(ErrorCode.DATA, `dataset file ${file} has no usable example: ${why.join(', ')}`);
    }
  }

  return new TokenizedDataset({
    reports,
    samples,
    ids: store.ids.subarray(0, store.used),
    mask: store.mask.subarray(0, store.used),
    offsets: Float64Array.from(store.offsets),
    fileIndex: Int32Array.from(store.fileIndex),
    lines: Int32Array.from(store.lines),
  });
}
