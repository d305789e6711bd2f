// INSTILL_CUDA_NEXT=wgmma_mn on the GPU: the wgmma attention kernels (flash_wgmma, dq_wgmma, dkv_wgmma) with their
// second products reading V, K, Q and dO tiles as they are, as MN-major operands (wgmma's transposed B), instead of
// tiles of transposed copies (native/cuda/attention_wgmma.cu). A file of its own (test/cuda/common.ts says why);
// skipped where no GPU is seen. On a GPU of compute capability 9.0 the kernels must run without any copy; anywhere
// else the piece changes nothing (the default's bits).
import { describe, expect, it } from 'vitest';

import { native } from '../../../src/native.js';
import { handleOf } from '../../../src/tensor.js';
import { rng, seed } from '../../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { relError } from '../../helpers/compare.js';
import { attention64, attentionBackward64, attentionCase, gpuForward, BF16_TOL, close, expectBits, hasCuda, HOPPER, host, WGMMA_ATTENTION_CASES } from '../common.js';

const WGMMA = 'default,flash_wgmma,dq_wgmma,dkv_wgmma';
const MN = `${WGMMA},wgmma_mn`;

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=wgmma_mn', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  // Each case: the forward and the backward (on the forward's own out and lse) with the three pieces and wgmma_mn,
  // against float64 on the inputs rounded to bf16 (1e-2 of the largest element for out and lse, BF16_TOL for the
  // gradients), against the same pieces on transposed copies (1e-2; the same products on the same values, so
  // the bits that differ are printed), deterministic, with no copy made. The cases common.ts lists (D 128: the
  // forward only, the backward's pieces take D 64).
  it.each(WGMMA_ATTENTION_CASES)('against float64 and the copies: $segs H=$h KVH=$kvh D=$d window=$window $kind', ({ segs, h, kvh, d, window, kind }) => {
    const A = native();
    const c = attentionCase(r, segs, h, kvh, d, kind);
    const { cu, scale, gpu, rounded, at, label } = c;
    const [qg, kg, vg, dg] = gpu;
    const pass = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() => {
      const f = gpuForward(c, window);
      const b = A.opAttentionBackward(handleOf(dg), handleOf(qg), handleOf(kg), handleOf(vg), f.out, f.lse, handleOf(cu), scale, window);
      return { out: host(f.out), lse: host(f.lse), dq: host(b.dq), dk: host(b.dk), dv: host(b.dv) };
    }));
    const copies = pass(WGMMA), mn = pass(MN), again = pass(MN);
    const keys = ['out', 'lse', 'dq', 'dk', 'dv'] as const;
    if (!HOPPER) {
      for (const key of keys) expectBits(mn.value[key], copies.value[key], `${label}: ${key}, unchanged off Hopper`, at(key));
      return;
    }
    expect(mn.parts.some((p) => p.includes('transposed')), `${label}: no transposed copy made`).toBe(false);
    expect(mn.parts).toContain('attention_forward/flash kernel, wgmma mn (next)');
    expect(mn.parts.includes('attention_backward/dq kernel, wgmma mn (next)'), `${label}: the MN-major dQ kernel`).toBe(d === 64);
    expect(mn.parts.some((p) => /^attention_backward\/dk dv kernel.*, wgmma mn \(next\)$/.test(p)), `${label}: the MN-major dK/dV kernel`).toBe(d === 64);
    const ref = attention64(rounded[0], rounded[1], rounded[2], segs, h, kvh, d, scale, window);
    const grads = attentionBackward64(rounded[0], rounded[1], rounded[2], rounded[3], segs, h, kvh, d, scale, window);
    const want = { out: ref.out, lse: ref.lse, ...grads };
    const notes: string[] = [];
    for (const key of keys) {
      const got = mn.value[key];
      expect(got.every((x) => Number.isFinite(x)), `${label}: ${key} finite`).toBe(true);
      expectBits(again.value[key], got, `${label}: ${key} deterministic`, at(key));
      close(got, want[key], key === 'out' || key === 'lse' ? 1e-2 : BF16_TOL, `${label}: ${key} against float64`, at(key));
      close(got, copies.value[key], 1e-2, `${label}: ${key} against the copies`, at(key));
      let differ = 0;
      for (let i = 0; i < got.length; i++) if (!Object.is(got[i], copies.value[key][i])) differ++;
      notes.push(`${key} ${relError(got, want[key]).toExponential(1)} (${differ} elements off the copies' bits)`);
    }
    console.log(`wgmma_mn ${label}: against float64: ${notes.join(', ')}`);
  });
});
