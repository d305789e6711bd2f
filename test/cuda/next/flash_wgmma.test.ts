// INSTILL_CUDA_NEXT=flash_wgmma on the GPU: the attention forward on Hopper's warpgroup products
// (native/cuda/attention_wgmma.cu). A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen.
// On a GPU of compute capability 9.0 (H100, H200) the piece must take the forward; on any other it must leave the
// lean forward's bits as they are.
import { describe, expect, it } from 'vitest';

import { native, type TensorHandle } from '../../../src/native.js';
import { handleOf } from '../../../src/tensor.js';
import { rng, seed } from '../../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { relError } from '../../helpers/compare.js';
import { attention64, attentionBackwardUnder, attentionCase, cpuAttention, BF16_TOL, close, expectBits, hasCuda, HOPPER, host, WGMMA_ATTENTION_CASES } from '../common.js';

const FWD = 'attention_forward/flash kernel, wgmma (next)';
const PIECE = 'default,flash_wgmma';
// the default without the piece (promoted in stop 36: `default` has it): the lean forward
const BASE = 'default,-flash_wgmma';
const hopper = HOPPER;

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=flash_wgmma', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  // Each case against the float64 reference on the inputs as the kernel reads them (rounded to bf16; the kernel also
  // rounds P to bf16 before P·V, so 1e-2 of the largest element, as every flash test), against the lean forward
  // (the default it would replace; the same arithmetic, the products' sums in another order), deterministic, and
  // with the backward run on its out and lse against the CPU's: the cases common.ts lists, and D 128 with bf16
  // activations. Outputs come from the allocator poisoned (NaN): an element left unwritten fails the finiteness check.
  it.each([
    ...WGMMA_ATTENTION_CASES,
    { segs: [0, 7, 100, 229], h: 4, kvh: 1, d: 128, window: 50, kind: 'bf16' as const },
  ])('against float64, the lean forward and the CPU: $segs H=$h KVH=$kvh D=$d window=$window $kind', ({ segs, h, kvh, d, window, kind }) => {
    const A = native();
    const c = attentionCase(r, segs, h, kvh, d, kind);
    const { cu, scale, gpu, rounded, at, label } = c;
    const [qg, kg, vg] = gpu;
    const forward = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() =>
      A.opAttention(handleOf(qg), handleOf(kg), handleOf(vg), handleOf(cu), scale, window)));
    const lean = forward(BASE), fw = forward(PIECE), fw2 = forward(PIECE);
    expect(lean.parts).not.toContain(FWD);
    if (!hopper) {  // not taken: the lean forward, its bits
      expect(fw.parts).not.toContain(FWD);
      for (const key of ['out', 'lse'] as const) expectBits(host(fw.value[key]), host(lean.value[key]), `${label}: ${key}`, at(key));
      return;
    }
    expect(fw.parts).toContain(FWD);
    // since stop 34 the products read V's swizzled tiles as they are: no transposed copy first
    expect(fw.parts.filter((p) => p.includes('transposed')), `${label}: no copy`).toEqual([]);
    const ref = attention64(rounded[0], rounded[1], rounded[2], segs, h, kvh, d, scale, window);
    const rel: string[] = [];
    for (const key of ['out', 'lse'] as const) {
      const got = host(fw.value[key]);
      expect(got.every((x) => Number.isFinite(x)), `${label}: ${key} finite`).toBe(true);
      expectBits(host(fw2.value[key]), got, `${label}: ${key} deterministic`, at(key));
      close(got, ref[key], 1e-2, `${label}: ${key} against float64`, at(key));
      close(got, host(lean.value[key]), 1e-2, `${label}: ${key} against the lean forward`, at(key));
      rel.push(`${key} ${relError(got, ref[key]).toExponential(1)} (lean ${relError(host(lean.value[key]), ref[key]).toExponential(1)})`);
    }
    console.log(`flash_wgmma ${label}: max |got − float64| / max |float64|: ${rel.join(', ')}`);
    // the backward (the default's kernels: the wgmma dQ and dK/dV since stop 36) on this forward's out and lse, against
    // the CPU's on its own forward
    const cb = cpuAttention(c, window);
    const gb = attentionBackwardUnder(c, fw.value as { out: TensorHandle; lse: TensorHandle }, window, 'default').value;
    for (const key of ['dq', 'dk', 'dv'] as const) close(gb[key], cb[key], BF16_TOL, `${label}: ${key} against the CPU`, at(key));
  });

  // The 1B step's shape (T 2048, 32/8 heads, D 64, bf16) and a longer one of two rows: 1024 and 1600 CTAs, several
  // to an SM, the tiles' loads overlapping the products; against the CPU (float64 would take minutes in JS here).
  it.each([
    { segs: [0, 2048], h: 32, kvh: 8 },
    { segs: [0, 1500, 3200], h: 16, kvh: 4 },
  ])('at scale against the lean forward and the CPU: $segs H=$h KVH=$kvh', ({ segs, h, kvh }) => {
    const A = native();
    const d = 64;
    const { n, cu, scale, cpu, gpu, at } = attentionCase(r, segs, h, kvh, d, 'bf16');
    const [qg, kg, vg] = gpu;
    const forward = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() =>
      A.opAttention(handleOf(qg), handleOf(kg), handleOf(vg), handleOf(cu), scale, 0)));
    const lean = forward(BASE), fw = forward(PIECE);
    expect(fw.parts.includes(FWD)).toBe(hopper);
    const ref = A.opAttention(handleOf(cpu[0]), handleOf(cpu[1]), handleOf(cpu[2]), handleOf(cu), scale, 0);
    for (const key of ['out', 'lse'] as const) {
      const got = host(fw.value[key]);
      expect(got.every((x) => Number.isFinite(x)), `n ${n}: ${key} finite`).toBe(true);
      close(got, host(lean.value[key]), 1e-2, `n ${n}: ${key} against the lean forward`, at(key));
      close(got, ref[key].toArray(), BF16_TOL, `n ${n}: ${key} against the CPU`, at(key));
    }
  });
});
