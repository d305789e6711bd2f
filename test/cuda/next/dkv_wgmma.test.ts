// INSTILL_CUDA_NEXT=dkv_wgmma on the GPU: the attention backward's dK/dV kernel on Hopper's warpgroup products
// (native/cuda/attention_wgmma.cu). A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
// On a GPU of compute capability 9.0 (H100, H200) the piece must take dK/dV at head dim 64; anywhere else (and at
// D 128) it must leave the default's bits as they are.
import { describe, expect, it } from 'vitest';

import { rng, seed } from '../../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { relError } from '../../helpers/compare.js';
import { attentionBackward64, attentionBackwardUnder, attentionCase, cpuAttention, gpuForward, BF16_TOL, close, expectBits, hasCuda, HOPPER, WGMMA_ATTENTION_CASES } from '../common.js';

const KERNEL = /^attention_backward\/dk dv kernel( \(per query head\))?, wgmma \(next\)$/;
const PIECE = 'default,dkv_wgmma';
// the default without the piece (promoted in stop 36: `default` has it)
const BASE = 'default,-dkv_wgmma';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=dkv_wgmma', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  // The backward with the piece on the default forward's out and lse: dk and dv against float64 (small cases; on the
  // inputs as the kernels read them, rounded to bf16: BF16_TOL of the largest element, as every flash backward
  // test) or the CPU (the large ones), against the default's (the lean kernel: the same arithmetic, the products'
  // sums in another order), deterministic, and dq the default's bits (its kernel is not touched). Both of the
  // kernel's modes: a CTA a query head with partials summed after (the small cases: fewer than 4 CTAs an SM
  // otherwise) and a CTA a KV head's whole group (4300 tokens), the latter with bf16 activations writing dk and dv
  // in bf16 itself; and the cases common.ts lists, D 128 among them, which the piece leaves alone. Outputs come from
  // the allocator poisoned (NaN).
  it.each([
    ...WGMMA_ATTENTION_CASES.map((c) => ({ ...c, ref: c.d === 64 ? 'f64' : 'none' })),
    { segs: [0, 2500, 4300], h: 16, kvh: 8, d: 64, window: 0, kind: 'f32' as const, ref: 'cpu' },
    { segs: [0, 2500, 4300], h: 16, kvh: 8, d: 64, window: 0, kind: 'bf16' as const, ref: 'cpu' },
  ])('against $ref and the default: $segs H=$h KVH=$kvh D=$d window=$window $kind', ({ segs, h, kvh, d, window, kind, ref }) => {
    const c = attentionCase(r, segs, h, kvh, d, kind);
    const { scale, rounded, at, label } = c;
    const f = gpuForward(c, window);
    const backward = (next: string) => attentionBackwardUnder(c, f, window, next);
    const base = backward(BASE), got = backward(PIECE), again = backward(PIECE);
    expect(base.parts.some((p) => KERNEL.test(p))).toBe(false);
    const takes = HOPPER && d === 64;
    expect(got.parts.some((p) => KERNEL.test(p)), `${label}: the wgmma dK/dV kernel ran`).toBe(takes);
    expect(got.parts.filter((p) => p.includes('transposed')), `${label}: no transposed copy (stop 34)`).toEqual([]);
    expectBits(got.value.dq, base.value.dq, `${label}: dq, the default's bits`, at('dq'));
    if (!takes) {
      for (const key of ['dk', 'dv'] as const) expectBits(got.value[key], base.value[key], `${label}: ${key}, the default's bits`, at(key));
      return;
    }
    let want: { dk: ArrayLike<number>; dv: ArrayLike<number> };
    if (ref === 'f64') {
      want = attentionBackward64(rounded[0], rounded[1], rounded[2], rounded[3], segs, h, kvh, d, scale, window);
    } else {
      want = cpuAttention(c, window);
    }
    const rel: string[] = [];
    for (const key of ['dk', 'dv'] as const) {
      expect(got.value[key].every((x) => Number.isFinite(x)), `${label}: ${key} finite`).toBe(true);
      expectBits(again.value[key], got.value[key], `${label}: ${key} deterministic`, at(key));
      close(got.value[key], want[key], BF16_TOL, `${label}: ${key} against ${ref}`, at(key));
      close(got.value[key], base.value[key], 1e-2, `${label}: ${key} against the default's`, at(key));
      rel.push(`${key} ${relError(got.value[key], want[key]).toExponential(1)} (the default's ${relError(base.value[key], want[key]).toExponential(1)})`);
    }
    console.log(`dkv_wgmma ${label}: max |got − ${ref}| / max |${ref}|: ${rel.join(', ')}`);
  });
});
