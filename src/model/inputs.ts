// Turns what a caller passes (rows of ids, Hugging Face labels, optional packing
// information) into the engine's flat token-level inputs:
//   ids, positions, targets (N = B·T) and cuSeqlens (segment boundaries).
//
// Rules (DESIGN.md): labels follow Hugging Face (same length as input_ids, -100 =
// ignore, NOT shifted); the shift happens here: targets[t] = labels[t+1] inside one
// example, -100 at an example's last token, so no example predicts the next one.
// Examples of a packed row are told apart by segmentIds (1, 2, ... ; 0 = padding);
// positions restart at 0 per example; attention never crosses a segment boundary.
import { ErrorCode, InstillError, describe } from '../errors.js';

export const IGNORE_INDEX = -100;

/** Integer typed arrays accepted for ids (int64 from a safetensors/numpy file included). */
export type IntArray = Int32Array | Uint32Array | Int16Array | Uint16Array | Int8Array | Uint8Array | BigInt64Array;

/**
 * Rows of token ids: one row (number[] or an integer typed array), several rows (an array of those),
 * or flat with batchSize/seqLen.
 */
export type TokenRows = ReadonlyArray<number> | IntArray | ReadonlyArray<ReadonlyArray<number> | IntArray>;

function isIntArray(v: unknown): v is IntArray {
  return (
    v instanceof Int32Array || v instanceof Uint32Array || v instanceof Int16Array || v instanceof Uint16Array ||
    v instanceof Int8Array || v instanceof Uint8Array || v instanceof BigInt64Array
  );
}

function toInt32(src: IntArray | ReadonlyArray<number>, what: string): Int32Array {
  if (src instanceof Int32Array) return src;
  const out = new Int32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = checkInt(Number(src[i]), what);
  return out;
}

export interface BatchInput {
  inputIds: TokenRows;
  /** Hugging Face labels (unshifted). Either labels or targets. */
  labels?: TokenRows;
  /**
   * Already shifted targets (targets[t] = the token position t predicts), as src/data's Batch has them.
   * When both are given (a Batch carries both), targets are used and labels are ignored.
   */
  targets?: TokenRows;
  /**
   * Hugging Face attention_mask (1 = token, 0 = padding), used when segmentIds is absent: padding
   * becomes segment 0 (attends only within itself, predicts nothing). RoPE is relative, so left
   * padding gives the same results as Hugging Face's masked attention.
   */
  attentionMask?: TokenRows;
  /** Packed rows: 1, 2, ... per example, 0 on padding. Default: one example per row. */
  segmentIds?: TokenRows;
  /** Positions per token. Default: restart at 0 per segment. */
  positions?: TokenRows;
  /** Rows and columns when inputIds is flat. */
  batchSize?: number;
  seqLen?: number;
}

export interface EngineInputs {
  batchSize: number;
  seqLen: number;
  ids: Int32Array;
  positions: Int32Array;
  targets: Int32Array | null;
  cuSeqlens: Int32Array;
}

function flatten(rows: TokenRows, what: string, bs?: number, sl?: number): { data: Int32Array; B: number; T: number } {
  if (isIntArray(rows) || (Array.isArray(rows) && (rows.length === 0 || typeof rows[0] === 'number'))) {
    const data = toInt32(rows as IntArray | number[], what);
    const B = bs ?? 1;
    const T = sl ?? data.length / B;
    if (!Number.isInteger(T) || B * T !== data.length) {
      throw new InstillError(ErrorCode.SHAPE, `${what} has ${data.length} tokens, which is not batchSize ${B} × seqLen ${sl ?? '?'}`);
    }
    return { data, B, T };
  }
  if (!Array.isArray(rows)) throw new InstillError(ErrorCode.ARG, `Expected an array of token ids or an array of rows for ${what} but received ${describe(rows)}`);
  const B = rows.length;
  const first = rows[0] as unknown;
  if (!Array.isArray(first) && !isIntArray(first)) {
    throw new InstillError(ErrorCode.ARG, `Expected rows of token ids (arrays or integer typed arrays) for ${what} but row 0 is ${describe(first)}`);
  }
  const T = first.length;
  const data = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const r = rows[b] as unknown;
    if (!(Array.isArray(r) || isIntArray(r)) || r.length !== T) {
      throw new InstillError(ErrorCode.SHAPE, `${what}: row ${b} has ${(r as { length?: number })?.length} tokens but row 0 has ${T}; pad rows to one length`);
    }
    data.set(toInt32(r as IntArray | number[], what), b * T);
  }
  return { data, B, T };
}

function checkInt(v: number, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < -2147483648 || v > 2147483647) {
    throw new InstillError(ErrorCode.ARG, `Expected 32-bit integers in ${what} but found ${describe(v)}`);
  }
  return v;
}

/** Shifts Hugging Face labels into targets, never across a segment boundary; padding (segment 0) predicts nothing. */
export function targetsFromLabels(labels: Int32Array, segmentIds: Int32Array, B: number, T: number): Int32Array {
  const out = new Int32Array(B * T).fill(IGNORE_INDEX);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t + 1 < T; t++) {
      const i = b * T + t;
      if (segmentIds[i] !== 0 && segmentIds[i] === segmentIds[i + 1]) out[i] = labels[i + 1];
    }
  }
  return out;
}

export function prepareInputs(input: BatchInput, needTargets: boolean, vocabSize: number): EngineInputs {
  if (input === null || typeof input !== 'object') throw new InstillError(ErrorCode.ARG, `Expected { inputIds, labels } but received ${describe(input)}`);
  const { data: ids, B, T } = flatten(input.inputIds, 'inputIds', input.batchSize, input.seqLen);
  if (B * T === 0) throw new InstillError(ErrorCode.SHAPE, 'inputIds is empty');
  for (let i = 0; i < ids.length; i++) {
    if (ids[i] < 0 || ids[i] >= vocabSize) throw new InstillError(ErrorCode.RANGE, `inputIds: token id ${ids[i]} at index ${i} is outside [0, ${vocabSize})`);
  }
  const same = (rows: TokenRows | undefined, what: string): Int32Array | null => {
    if (rows === undefined || rows === null) return null;
    const f = flatten(rows, what, B, T);
    if (f.B !== B || f.T !== T) throw new InstillError(ErrorCode.SHAPE, `${what} is ${f.B}×${f.T} but inputIds is ${B}×${T}`);
    return f.data;
  };
  let seg = same(input.segmentIds, 'segmentIds');
  const mask = seg ? null : same(input.attentionMask, 'attentionMask');
  if (mask) seg = mask.map((m) => (m === 0 ? 0 : 1));
  if (!seg) seg = new Int32Array(B * T).fill(1);
  let positions = same(input.positions, 'positions');
  if (!positions) {
    positions = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      let p = 0;
      for (let t = 0; t < T; t++) {
        const i = b * T + t;
        if (t > 0 && seg[i] !== seg[i - 1]) p = 0;
        positions[i] = seg[i] === 0 ? 0 : p++;
      }
    }
  }
  const cu: number[] = [0];
  for (let b = 0; b < B; b++) {
    for (let t = 1; t < T; t++) if (seg[b * T + t] !== seg[b * T + t - 1]) cu.push(b * T + t);
    cu.push((b + 1) * T);
  }
  let targets: Int32Array | null = null;
  const labels = same(input.labels, 'labels');
  const tg = same(input.targets, 'targets');
  if (tg) targets = tg;
  else if (labels) targets = targetsFromLabels(labels, seg, B, T);
  if (needTargets && !targets) throw new InstillError(ErrorCode.ARG, 'lossAndGrads needs labels (Hugging Face convention, same shape as inputIds)');
  if (targets) {
    for (let i = 0; i < targets.length; i++) {
      const v = targets[i];
      if (v !== IGNORE_INDEX && (v < 0 || v >= vocabSize)) {
        throw new InstillError(ErrorCode.RANGE, `label ${v} is outside [0, ${vocabSize}) and is not -100`);
      }
    }
  }
  return { batchSize: B, seqLen: T, ids, positions, targets, cuSeqlens: Int32Array.from(cu) };
}
