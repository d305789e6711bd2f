// Length handling: an example longer than maxSeqLen is cut from the stated side, or dropped.
//
// 'right' keeps the first maxSeqLen tokens (the end of the last answer, and its EOS, may be lost);
// 'left' keeps the last maxSeqLen tokens (the BOS and the start of the prompt are lost); 'drop' removes
// the example. Whatever happens is counted by the caller; an example left with no token in the loss is
// dropped (an example of only prompt teaches nothing, and would divide the loss by zero).
import type { MaskedExample } from './masking.js';

export type Truncation = 'right' | 'left' | 'drop';
export const TRUNCATIONS = ['right', 'left', 'drop'] as const;

export type LengthOutcome =
  | { kind: 'kept'; example: MaskedExample; truncated: boolean }
  | { kind: 'dropped'; reason: 'tooLong' | 'noTargets' };

/** Number of tokens in the loss: labels at t >= 1 (the first token of an example is never predicted). */
export function countTargets(mask: Uint8Array): number {
  let n = 0;
  for (let t = 1; t < mask.length; t++) n += mask[t];
  return n;
}

export function applyMaxLength(example: MaskedExample, maxSeqLen: number, truncation: Truncation): LengthOutcome {
  let ex = example;
  let truncated = false;
  if (ex.ids.length > maxSeqLen) {
    if (truncation === 'drop') return { kind: 'dropped', reason: 'tooLong' };
    truncated = true;
    ex =
      truncation === 'right'
        ? { ids: ex.ids.slice(0, maxSeqLen), mask: ex.mask.slice(0, maxSeqLen) }
        : { ids: ex.ids.slice(ex.ids.length - maxSeqLen), mask: ex.mask.slice(ex.mask.length - maxSeqLen) };
  }
  if (countTargets(ex.mask) === 0) return { kind: 'dropped', reason: 'noTargets' };
  return { kind: 'kept', example: ex, truncated };
}
