// Epochs of batches over a tokenized dataset, with a resumable cursor.
//
// The batches of epoch e are a pure function of (dataset, indices, options, seed, e): the examples are
// shuffled with stream e of the seed, then packed (or length-grouped and padded) into rows, then cut into
// batches of batchSize rows. A cursor {epoch, position} names the next batch to produce; starting from a
// saved cursor replays exactly the batches the uninterrupted run would have produced from there, because
// nothing (no RNG state, no buffer) carries over from one batch to the next.
import { ErrorCode, InstillError } from '../errors.js';
import { assembleBatch, type Batch, type ExampleSource } from './batch.js';
import { groupByLength, packRows } from './packing.js';
import { seededPermutation, seededRandom } from './shuffle.js';
import { splitIndices } from './split.js';

export interface LoaderOptions {
  /** Rows per batch. */
  batchSize: number;
  /** Tokens per row when packing; the longest a padded row may be. */
  maxSeqLen: number;
  /** Several examples per row (default true); false: one example per row, padded. */
  packing?: boolean;
  /** Shuffle each epoch (default true). */
  shuffle?: boolean;
  seed?: number;
  /** Padding mode: batches of similar lengths (default true). */
  groupByLength?: boolean;
  /** Padding mode: pad rows to a multiple of this (default 1). */
  padToMultipleOf?: number;
  /** Drop the last batch of an epoch when it has fewer than batchSize rows (default false). */
  dropLast?: boolean;
  /** Packing window (examples per best-fit group), default 1024. */
  packWindow?: number;
}

/** Where a run is in its data: the next batch is number `position` (0-based) of epoch `epoch`. */
export interface DataCursor {
  epoch: number;
  position: number;
}

export interface LoadedBatch {
  batch: Batch;
  /** The cursor of this batch. */
  cursor: DataCursor;
  /** The cursor to save after this batch is consumed: resuming from it yields the batch after this one. */
  next: DataCursor;
}

const PLAN_RANDOM_STREAM = 0x10000;

export class BatchLoader {
  private readonly source: ExampleSource;
  private readonly indices: Int32Array;
  private readonly padId: number;
  private readonly opts: Required<LoaderOptions>;
  private cachedEpoch = -1;
  private cachedPlan: number[][][] = [];

  /** `indices`: the examples of `source` this loader uses (e.g. the train split); null = all `size` of them. */
  constructor(source: ExampleSource & { size: number }, indices: Int32Array | null, padId: number, options: LoaderOptions) {
    if (!Number.isInteger(options.batchSize) || options.batchSize < 1) {
      throw new InstillError(ErrorCode.ARG, `Expected integer >= 1 for batchSize but received ${String(options.batchSize)}`);
    }
    if (!Number.isInteger(options.maxSeqLen) || options.maxSeqLen < 2) {
      throw new InstillError(ErrorCode.ARG, `Expected integer >= 2 for maxSeqLen but received ${String(options.maxSeqLen)}`);
    }
    this.source = source;
    this.indices = indices ?? Int32Array.from({ length: source.size }, (_, i) => i);
    if (this.indices.length === 0) throw new InstillError(ErrorCode.DATA, 'the data loader has no example to draw from');
    for (const i of this.indices) {
      if (source.length(i) > options.maxSeqLen) {
        throw new InstillError(ErrorCode.ARG, `example ${i} has ${source.length(i)} tokens, more than maxSeqLen ${options.maxSeqLen}: load the dataset with the same maxSeqLen`);
      }
    }
    this.padId = padId;
    this.opts = {
      packing: true,
      shuffle: true,
      seed: 0,
      groupByLength: true,
      padToMultipleOf: 1,
      dropLast: false,
      packWindow: 1024,
      ...options,
    };
  }

  /** The batches of `epoch`, each a list of rows, each row a list of example indices. */
  plan(epoch: number): number[][][] {
    if (epoch === this.cachedEpoch) return this.cachedPlan;
    const o = this.opts;
    let order: Int32Array;
    if (o.shuffle) {
      const perm = seededPermutation(this.indices.length, o.seed, epoch);
      order = perm.map((k) => this.indices[k]);
    } else order = this.indices;
    const len = (i: number): number => this.source.length(i);
    let batches: number[][][];
    if (o.packing) {
      const rows = packRows(order, len, o.maxSeqLen, o.packWindow);
      batches = [];
      for (let r = 0; r < rows.length; r += o.batchSize) batches.push(rows.slice(r, r + o.batchSize));
    } else {
      let groups: number[][];
      if (o.groupByLength) groups = groupByLength(order, len, o.batchSize, seededRandom(o.seed, PLAN_RANDOM_STREAM + epoch));
      else {
        groups = [];
        for (let k = 0; k < order.length; k += o.batchSize) groups.push(Array.from(order.subarray(k, k + o.batchSize)));
      }
      batches = groups.map((g) => g.map((e) => [e]));
    }
    if (o.dropLast && batches.length > 0 && batches[batches.length - 1].length < o.batchSize) batches.pop();
    this.cachedEpoch = epoch;
    this.cachedPlan = batches;
    return batches;
  }

  batchesInEpoch(epoch: number): number {
    return this.plan(epoch).length;
  }

  /** Batch number `position` of `epoch`. */
  batch(cursor: DataCursor): Batch {
    const plan = this.plan(cursor.epoch);
    const rows = plan[cursor.position];
    if (rows === undefined) {
      throw new InstillError(ErrorCode.RANGE, `epoch ${cursor.epoch} has ${plan.length} batches; position ${cursor.position} is past its end`);
    }
    let T = this.opts.maxSeqLen;
    if (!this.opts.packing) {
      let longest = 0;
      for (const row of rows) longest = Math.max(longest, this.source.length(row[0]));
      const m = this.opts.padToMultipleOf;
      T = Math.min(this.opts.maxSeqLen, Math.ceil(longest / m) * m);
      if (T < longest) T = longest;
    }
    return assembleBatch(this.source, rows, T, this.padId);
  }

  /** Batches from `from` (default the start) until the end of epoch `epochs - 1`. */
  *iterate(from: DataCursor = { epoch: 0, position: 0 }, epochs = 1): Generator<LoadedBatch> {
    if (!Number.isInteger(from.epoch) || from.epoch < 0 || !Number.isInteger(from.position) || from.position < 0) {
      throw new InstillError(ErrorCode.ARG, `Expected a cursor of non-negative integers but received ${JSON.stringify(from)}`);
    }
    let { epoch, position } = from;
    while (epoch < epochs) {
      const n = this.batchesInEpoch(epoch);
      if (position > n) throw new InstillError(ErrorCode.RANGE, `cursor position ${position} is past the ${n} batches of epoch ${epoch}`);
      for (; position < n; position++) {
        const cursor = { epoch, position };
        const batch = this.batch(cursor);
        const next = position + 1 < n ? { epoch, position: position + 1 } : { epoch: epoch + 1, position: 0 };
        yield { batch, cursor, next };
      }
      epoch++;
      position = 0;
    }
  }
}

export interface DataLoadersOptions extends LoaderOptions {
  /** Held-out examples: a fraction in [0, 1) or a count; 0 or absent = no validation loader. */
  validation?: number;
}

/**
 * The train loader and, with `validation`, a validation loader over a seeded held-out split
 * (see split.ts). The validation loader never shuffles, so every evaluation sees the same batches.
 */
export function createDataLoaders(
  source: ExampleSource & { size: number },
  padId: number,
  options: DataLoadersOptions,
): { train: BatchLoader; validation: BatchLoader | null } {
  const { validation, ...loaderOptions } = options;
  if (validation === undefined || validation === 0) return { train: new BatchLoader(source, null, padId, loaderOptions), validation: null };
  const split = splitIndices(source.size, { validation, seed: options.seed });
  return {
    train: new BatchLoader(source, split.train, padId, loaderOptions),
    validation: new BatchLoader(source, split.validation, padId, { ...loaderOptions, shuffle: false }),
  };
}
