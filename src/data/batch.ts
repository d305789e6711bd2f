// The batch the data layer hands to the engine, and how it is assembled from examples.
//
// A batch is B rows of T tokens, stored row-major in flat typed arrays (index b*T + t). A row holds one
// example (padding mode) or several (packing); each example is a "segment" of its row:
//   inputIds[i]    token id; padding positions hold padId
//   targets[i]     the token position i must predict, or -100 (IGNORE_INDEX): already shifted, so the
//                  engine never shifts again. The last token of every example predicts nothing (-100):
//                  no example learns to predict the start of the next one.
//   labels[i]      Hugging Face labels (unshifted): inputIds[i] when token i is in the loss, else -100.
//                  targets[i] = labels[i+1] inside an example.
//   positions[i]   position of the token inside its example, restarting at 0 per example (0 on padding)
//   segmentIds[i]  1, 2, ... for the examples of a row, 0 on padding: token i may attend to token j of the
//                  same row iff segmentIds[i] === segmentIds[j] !== 0 and j <= i
//   cuSeqlens      (S+1) cumulative segment boundaries over the flattened B*T tokens, flash-attention
//                  varlen style; every example is one segment and every row's padding tail is one
//                  segment (cuSeqlens[S] = B*T). With segmentIds, padding segments are told apart.
import { ErrorCode, InstillError } from '../errors.js';

export const IGNORE_INDEX = -100;

export interface Batch {
  /** B: rows. */
  batchSize: number;
  /** T: tokens per row. */
  seqLen: number;
  inputIds: Int32Array; // (B, T)
  targets: Int32Array; // (B, T)
  labels: Int32Array; // (B, T)
  positions: Int32Array; // (B, T)
  segmentIds: Int32Array; // (B, T)
  cuSeqlens: Int32Array; // (S+1)
  /** Dataset index of each example, in the order they appear (row by row). */
  exampleIds: Int32Array; // (E)
  numExamples: number;
  /** Non-padding tokens. */
  numTokens: number;
  /** Positions whose target is not IGNORE_INDEX: the loss divides by these (summed over a step). */
  numTargets: number;
}

/** The lengths of a batch's examples (its segments that are not a row's padding tail), in order. */
export function exampleLengths(batch: Pick<Batch, 'cuSeqlens' | 'segmentIds'>): number[] {
  const cu = batch.cuSeqlens, out: number[] = [];
  for (let s = 0; s + 1 < cu.length; s++) if (cu[s + 1] > cu[s] && batch.segmentIds[cu[s]] !== 0) out.push(cu[s + 1] - cu[s]);
  return out;
}

/** Where a batch's examples come from (TokenizedDataset implements it). */
export interface ExampleSource {
  ids(i: number): Int32Array;
  mask(i: number): Uint8Array;
  length(i: number): number;
}

/** Builds a batch of `rows` (each a list of example indices) of `seqLen` tokens, padded with padId. */
export function assembleBatch(source: ExampleSource, rows: ReadonlyArray<ArrayLike<number>>, seqLen: number, padId: number): Batch {
  const B = rows.length;
  const T = seqLen;
  const inputIds = new Int32Array(B * T).fill(padId);
  const targets = new Int32Array(B * T).fill(IGNORE_INDEX);
  const labels = new Int32Array(B * T).fill(IGNORE_INDEX);
  const positions = new Int32Array(B * T);
  const segmentIds = new Int32Array(B * T);
  const cu: number[] = [0];
  const exampleIds: number[] = [];
  let numTokens = 0;
  let numTargets = 0;
  for (let b = 0; b < B; b++) {
    const row = rows[b];
    let t = 0;
    for (let k = 0; k < row.length; k++) {
      const e = row[k];
      const ids = source.ids(e);
      const mask = source.mask(e);
      const L = ids.length;
      if (t + L > T) {
        throw new InstillError(ErrorCode.INTERNAL, `row ${b} of a batch holds ${t + L} tokens, more than its ${T}`);
      }
      const base = b * T + t;
      inputIds.set(ids, base);
      for (let j = 0; j < L; j++) {
        positions[base + j] = j;
        segmentIds[base + j] = k + 1;
        if (mask[j] === 1) labels[base + j] = ids[j];
        if (j + 1 < L && mask[j + 1] === 1) {
          targets[base + j] = ids[j + 1];
          numTargets++;
        }
      }
      t += L;
      numTokens += L;
      cu.push(b * T + t);
      exampleIds.push(e);
    }
    if (t < T) cu.push((b + 1) * T);
  }
  return {
    batchSize: B,
    seqLen: T,
    inputIds,
    targets,
    labels,
    positions,
    segmentIds,
    cuSeqlens: Int32Array.from(cu),
    exampleIds: Int32Array.from(exampleIds),
    numExamples: exampleIds.length,
    numTokens,
    numTargets,
  };
}

/**
 * Shifted targets from Hugging Face labels (for callers that bring their own labels):
 * targets[i] = labels[i+1] when token i+1 is in the same example (same row, same non-zero segment), else -100.
 */
export function targetsFromLabels(labels: Int32Array, segmentIds: Int32Array, seqLen: number): Int32Array {
  if (labels.length !== segmentIds.length || labels.length % seqLen !== 0) {
    throw new InstillError(ErrorCode.SHAPE, `labels (${labels.length}) and segmentIds (${segmentIds.length}) must both be B*${seqLen} long`);
  }
  const out = new Int32Array(labels.length).fill(IGNORE_INDEX);
  for (let i = 0; i < labels.length; i++) {
    if ((i + 1) % seqLen === 0) continue;
    const s = segmentIds[i];
    if (s !== 0 && segmentIds[i + 1] === s) out[i] = labels[i + 1];
  }
  return out;
}
