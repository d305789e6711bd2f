// INSTILL_CUDA_NEXT=dq_wgmma on the GPU: the attention backward's dQ kernel on Hopper's warpgroup products
// (native/cuda/attention_wgmma.cu). A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
// On a GPU of compute capability 9.0 (H100, H200) the piece must take dQ at head dim 64; anywhere else (and at
// D 128) it must leave the default's bits as they are.
import { describe, expect, it } from 'vitest';

import { rng, seed } from '../../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { relError } from '../../helpers/compare.js';
import { attentionBackward64, attentionBackwardUnder, attentionCase, cpuAttention, gpuForward, BF16_TOL, close, expectBits, hasCuda, HOPPER, WGMMA_ATTENTION_CASES } from '../common.js';

const DQ = 'attention_backward/dq kernel, wgmma (next)';
const PIECE = 'default,dq_wgmma';
// the default without the piece (promoted in stop 36: `default` has it)
const BASE = 'default,-dq_wgmma';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=dq_wgmma', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  // Each case: the backward with the piece on the default forward's out and lse, dq against float64 on the inputs as
  // the kernels read them (rounded to bf16; dS is rounded to bf16 before dS·K, and dP − Δ cancels: BF16_TOL of the
  // largest element, as every flash backward test), against the default's dq (the lean kernel: the same arithmetic,
  // the products' sums in another order), deterministic, and dk, dv the default's bits (their kernels are not
  // touched). The cases (common.ts) include D 128, which the piece leaves alone. Outputs come from the allocator
  // poisoned (NaN): an element left unwritten fails the finiteness check.
  it.each(WGMMA_ATTENTION_CASES)('against float64 and the default: $segs H=$h KVH=$kvh D=$d window=$window $kind', ({ segs, h, kvh, d, window, kind }) => {
    const c = attentionCase(r, segs, h, kvh, d, kind);
    const { scale, rounded, at, label } = c;
    const f = gpuForward(c, window);
    const backward = (next: string) => attentionBackwardUnder(c, f, window, next);
    const base = backward(BASE), got = backward(PIECE), again = backward(PIECE);
    expect(base.parts).not.toContain(DQ);
    const takes = HOPPER && d === 64;
    expect(got.parts.includes(DQ), `${label}: the wgmma dQ kernel ran`).toBe(takes);
    expect(got.parts.filter((p) => p.includes('transposed')), `${label}: no transposed copy (stop 34)`).toEqual([]);
    for (const key of ['dk', 'dv'] as const) expectBits(got.value[key], base.value[key], `${label}: ${key}, the default's bits`, at(key));
    if (!takes) return expectBits(got.value.dq, base.value.dq, `${label}: dq, the default's bits`, at('dq'));
    expect(got.value.dq.every((x) => Number.isFinite(x)), `${label}: dq finite`).toBe(true);
    expectBits(again.value.dq, got.value.dq, `${label}: dq deterministic`, at('dq'));
    const ref = attentionBackward64(rounded[0], rounded[1], rounded[2], rounded[3], segs, h, kvh, d, scale, window).dq;
    close(got.value.dq, ref, BF16_TOL, `${label}: dq against float64`, at('dq'));
    close(got.value.dq, base.value.dq, 1e-2, `${label}: dq against the default's`, at('dq'));
    console.log(`dq_wgmma ${label}: max |dq − float64| / max |float64| ${relError(got.value.dq, ref).toExponential(1)} ` +
      `(the default's ${relError(base.value.dq, ref).toExponential(1)})`);
  });

  // The 1B step's shape (T 2048, 32/8 heads, D 64, bf16 activations), 1024 CTAs: against the default and the CPU.
  it('at the 1B step\'s shape against the default and the CPU', () => {
    const segs = [0, 2048], h = 32, kvh = 8, d = 64;
    const c = attentionCase(r, segs, h, kvh, d, 'bf16');
    const { at } = c;
    const f = gpuForward(c, 0);
    const base = attentionBackwardUnder(c, f, 0, BASE), got = attentionBackwardUnder(c, f, 0, PIECE);
    expect(got.parts.includes(DQ)).toBe(HOPPER);
    expect(got.value.dq.every((x) => Number.isFinite(x))).toBe(true);
    close(got.value.dq, base.value.dq, 1e-2, 'dq against the default\'s', at('dq'));
    close(got.value.dq, cpuAttention(c, 0).dq, BF16_TOL, 'dq against the CPU', at('dq'));
  });
});
