// INSTILL_CUDA_NEXT=flash_mt on the GPU: (with attn_prep) the D = 64 flash forward and dQ kernels with two
// m-tiles a warp, and the pipelined backward's Δ and bf16 copies in one pass.
// A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen, like test/cuda.
import { describe, expect, it } from 'vitest';

import { handleOf } from '../../../src/tensor.js';
import { native } from '../../../src/native.js';
import { rng, seed } from '../../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { attentionInputs, attentionLayout, BF16_TOL, close, expectBits, hasCuda, host } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=flash_mt', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  // INSTILL_CUDA_NEXT=flash_mt,attn_prep: the D = 64 forward and dQ kernels with two m-tiles a warp (128 queries a CTA). Each
  // row's arithmetic is the verified kernels', over the same key tiles / 16-key slices when a CTA's first
  // visible key is the same: one segment from 0, no window, gives the same bits; packed rows and windows
  // move where tiles start (rounding). The dK/dV kernel is the same either way: its bits must not move (nor Δ's,
  // which the next kernels compute with the backward's bf16 copies in one pass).
  it.each([
    { segs: [0, 333], h: 4, kvh: 2, d: 64, window: 0, same: true },
    { segs: [0, 2048], h: 8, kvh: 2, d: 64, window: 0, same: true },
    { segs: [0, 13, 50, 51, 90], h: 4, kvh: 2, d: 64, window: 0, same: false },
    { segs: [0, 1, 200, 333], h: 4, kvh: 2, d: 64, window: 40, same: false },
    { segs: [0, 150, 300], h: 8, kvh: 2, d: 128, window: 0, same: true },  // D 128: one m-tile either way
  ])('flash attention forward and dQ, 32 queries a warp (INSTILL_CUDA_NEXT=flash_mt,attn_prep): $segs H=$h KVH=$kvh D=$d window=$window', ({ segs, h, kvh, d, window, same }) => {
    const A = native();
    const { q, k, v, dout, cu, scale } = attentionInputs(r, segs, h, kvh, d);
    const at = (key: 'out' | 'lse' | 'dq' | 'dk' | 'dv') => attentionLayout(key, segs, h, kvh, d);
    const fwd = A.opAttention(handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), handleOf(cu.cpu), scale, window);
    const run = (next: boolean, mode?: string) => withEnv('INSTILL_CUDA_NEXT', next ? 'flash_mt,attn_prep' : 'none', () => withEnv('INSTILL_CUDA_ATTENTION', mode, () => {
      const { value, parts } = withOpProfile(() => {
        const f = A.opAttention(handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), handleOf(cu.cpu), scale, window);
        // the backward from the same forward outputs on both paths (fwd: the verified kernel's), so that
        // only the backward's own kernels can move its bits
        const b = A.opAttentionBackward(handleOf(dout.gpu), handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), fwd.out, fwd.lse, handleOf(cu.cpu), scale, window);
        return { out: host(f.out), lse: host(f.lse), dq: host(b.dq), dk: host(b.dk), dv: host(b.dv) };
      });
      return { ...value, parts };
    }));
    const verified = run(false), next = run(true), nextPiped = run(true, 'pipelined');
    const parts = ['attention_forward/flash kernel, 32 queries a warp (next)', 'attention_backward/dq kernel, 32 queries a warp (next)'];
    for (const part of parts) {
      expect(verified.parts).not.toContain(part);
      if (d === 64) {
        expect(next.parts).toContain(part);
        expect(nextPiped.parts).toContain(part);
      } else {
        expect(next.parts).not.toContain(part);
      }
    }
    // the pipelined backward's Δ and bf16 copies in one pass, any D (dK, dV's bits below check Δ's)
    const prep = 'attention_backward/delta and bf16 copies of q, k, v, dO in one pass (next)';
    expect(verified.parts).not.toContain(prep);
    expect(verified.parts).toContain('attention_backward/delta = rowsum(dO * O)');
    expect(next.parts).toContain(prep);
    expect(next.parts).not.toContain('attention_backward/delta = rowsum(dO * O)');
    expect(nextPiped.parts).toContain(prep);
    for (const key of ['out', 'lse', 'dq', 'dk', 'dv'] as const) {
      expect(next[key].every((x) => Number.isFinite(x)), key).toBe(true);
      expectBits(nextPiped[key], next[key], `${key}: pipelined and synchronous loads`, at(key));
      if (same || key === 'dk' || key === 'dv') expectBits(next[key], verified[key], `${key}: the verified kernels' bits`, at(key));
    }
    const ref = A.opAttention(handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), handleOf(cu.cpu), scale, window);
    close(next.out, ref.out.toArray(), BF16_TOL, 'out', at('out'));
    close(next.lse, ref.lse.toArray(), BF16_TOL, 'lse', at('lse'));
    const refB = A.opAttentionBackward(handleOf(dout.cpu), handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), ref.out, ref.lse, handleOf(cu.cpu), scale, window);
    close(next.dq, refB.dq.toArray(), BF16_TOL, 'dq', at('dq'));
  });
});
