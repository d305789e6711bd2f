// INSTILL_CUDA_NEXT=flash_lean on the GPU: the flash kernels with leaner inner loops (attention_lean.cu).
// A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen, like test/cuda.
import { describe, expect, it } from 'vitest';

import { Tensor } from '../../../src/index.js';
import { native, type TensorHandle } from '../../../src/native.js';
import { handleOf } from '../../../src/tensor.js';
import { rng, seed } from '../../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { relError } from '../../helpers/compare.js';
import { attentionInputs, attentionLayout, BF16_TOL, close, expectBits, hasCuda, host } from '../common.js';

const FWD = 'attention_forward/flash kernel, lean (next)';
const DQ = 'attention_backward/dq kernel, lean (next)';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=flash_lean', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  // The lean forward computes what the verified one does with P = 2^(fma(s, c, −m)) in one rounding instead of
  // two, so after P's bf16 rounding an element may land one bf16 step from the verified kernel's: out and lse are
  // compared with the verified kernel's (1e-2 of the largest, where bf16 steps show). The lean backward's
  // arithmetic is the verified kernels' (the same fma before the exponential, the same mask, the same products in
  // the same order; only probabilities below 2^-126 differ, which these inputs never make): on the verified
  // forward's out and lse it must give their dq, dk, dv bit for bit. And the lean forward then backward against
  // the CPU's f64-accumulated reference (BF16_TOL, as every flash test). Every path the lean kernels take:
  // forward synchronous and pipelined, the pipelined backward, bf16 activations, D 64 and 128, segments not a
  // multiple of 64 (masked tiles at a segment's start as well as the diagonal), a sliding window (masked tiles on
  // the left), GQA, both dK/dV modes (per query head below 4 CTAs an SM, per group above). Outputs
  // come from the allocator poisoned (0xff: NaN): an element left unwritten fails the finiteness check.
  it.each([
    { segs: [0, 2048], h: 8, kvh: 2, d: 64, window: 0, kind: 'f32' },
    { segs: [0, 13, 50, 51, 90], h: 4, kvh: 2, d: 64, window: 0, kind: 'f32' },
    { segs: [0, 1, 200, 333], h: 4, kvh: 1, d: 64, window: 40, kind: 'f32' },
    { segs: [0, 2500, 4300], h: 16, kvh: 8, d: 64, window: 0, kind: 'f32' },  // dK/dV per group (no split)
    { segs: [0, 300, 701], h: 4, kvh: 2, d: 64, window: 0, kind: 'bf16' },
    { segs: [0, 150, 300], h: 8, kvh: 2, d: 128, window: 0, kind: 'f32' },
    { segs: [0, 7, 100, 229], h: 4, kvh: 1, d: 128, window: 50, kind: 'f32' },
    { segs: [0, 300, 701], h: 4, kvh: 2, d: 128, window: 0, kind: 'bf16' },
  ])('lean flash kernels against the verified ones and the CPU: $segs H=$h KVH=$kvh D=$d window=$window $kind', ({ segs, h, kvh, d, window, kind }) => {
    const A = native();
    const n = segs[segs.length - 1];
    const { q, k, v, dout, cu, scale } = attentionInputs(r, segs, h, kvh, d);
    const dev = (t: { cpu: Tensor }) => (kind === 'bf16' ? Tensor.from(t.cpu.toArray() as Float32Array, t.cpu.shape, { dtype: 'bf16' }).to('cuda') : t.cpu.to('cuda'));
    const [qg, kg, vg, dg] = [dev(q), dev(k), dev(v), dev(dout)];
    const lean = 'flash_lean';
    const at = (key: 'out' | 'lse' | 'dq' | 'dk' | 'dv') => attentionLayout(key, segs, h, kvh, d);
    const base = 'none';  // the verified kernels to compare with
    const inMode = <T>(next: string | undefined, mode: string | undefined, fn: () => T) =>
      withEnv('INSTILL_CUDA_NEXT', next, () => withEnv('INSTILL_CUDA_ATTENTION', mode, () => withOpProfile(fn)));
    const forward = (next: string | undefined, mode: string | undefined) => inMode(next, mode, () =>
      A.opAttention(handleOf(qg), handleOf(kg), handleOf(vg), handleOf(cu.cpu), scale, window));
    const backward = (next: string | undefined, mode: string | undefined, f: { out: TensorHandle; lse: TensorHandle }) => inMode(next, mode, () => {
      const b = A.opAttentionBackward(handleOf(dg), handleOf(qg), handleOf(kg), handleOf(vg), f.out, f.lse, handleOf(cu.cpu), scale, window);
      return { dq: host(b.dq), dk: host(b.dk), dv: host(b.dv) };
    });
    const ref = kind === 'f32' ? A.opAttention(handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), handleOf(cu.cpu), scale, window) : null;
    const refB = ref && A.opAttentionBackward(handleOf(dout.cpu), handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), ref.out, ref.lse, handleOf(cu.cpu), scale, window);
    // default (with flash_lean): both pipelined, as 'pipelined'; 'flash': both synchronous, where the lean forward
    // runs and the backward keeps the verified kernels (the lean ones stream bf16 tiles)
    for (const mode of kind === 'bf16' ? [undefined] : [undefined, 'pipelined', 'flash']) {
      const label = `${kind} n ${n} D ${d} mode ${mode ?? 'default'}`;
      const leanBackward = mode !== 'flash';
      // the forward: close to the verified kernel's, deterministic
      const fv = forward(base, mode), fl = forward(lean, mode), fl2 = forward(lean, mode);
      expect(fv.parts.some((p) => p.startsWith('attention_forward/flash kernel, lean'))).toBe(false);
      expect(fl.parts).toContain(FWD);
      expect(fl.parts.includes('attention_forward/bf16 copies of k, v'), `${label}: the forward pipelined`).toBe(kind === 'f32' && mode !== 'flash');
      const rel: string[] = [];
      for (const key of ['out', 'lse'] as const) {
        const a = host(fl.value[key]), b = host(fv.value[key]);
        expect(a.every((x) => Number.isFinite(x)), `${label}: ${key} finite`).toBe(true);
        expectBits(host(fl2.value[key]), a, `${label}: ${key} deterministic`, at(key));
        rel.push(`${key} ${relError(a, b).toExponential(1)}`);
        close(a, b, 1e-2, `${label}: ${key} against the verified kernel`, at(key));
      }
      console.log(`flash_lean ${label}: forward max |lean − verified| / max |verified|: ${rel.join(', ')}`);
      // the backward on the verified forward's outputs: the verified kernels' bits
      const bv = backward(base, mode, fv.value), bl = backward(lean, mode, fv.value);
      const dkvLean = bl.parts.some((p) => p.startsWith('attention_backward/dk dv kernel') && p.endsWith(', lean (next)'));
      expect(dkvLean, `${label}: the lean dK/dV kernel ran`).toBe(leanBackward);
      expect(bl.parts.includes(DQ), `${label}: the lean dQ kernel ran`).toBe(leanBackward);
      for (const key of ['dq', 'dk', 'dv'] as const) {
        expect(bl.value[key].every((x) => Number.isFinite(x)), `${label}: ${key} finite`).toBe(true);
        expectBits(bl.value[key], bv.value[key], `${label}: ${key}, the verified kernels' bits`, at(key));
      }
      // lean all the way, against the CPU
      if (ref && refB) {
        const b = backward(lean, mode, fl.value).value;
        close(host(fl.value.out), ref.out.toArray(), BF16_TOL, `${label}: out against the CPU`, at('out'));
        close(host(fl.value.lse), ref.lse.toArray(), BF16_TOL, `${label}: lse against the CPU`, at('lse'));
        close(b.dq, refB.dq.toArray(), BF16_TOL, `${label}: dq against the CPU`, at('dq'));
        close(b.dk, refB.dk.toArray(), BF16_TOL, `${label}: dk against the CPU`, at('dk'));
        close(b.dv, refB.dv.toArray(), BF16_TOL, `${label}: dv against the CPU`, at('dv'));
      }
    }
  });

  // The forward's row max is taken on the raw scores and scaled after, which needs scale > 0: any other scale
  // keeps the verified kernels (the same bits as without flash_lean).
  it('a scale that is not > 0 keeps the verified kernels', () => {
    const A = native();
    const { q, k, v, dout, cu } = attentionInputs(r, [0, 100, 190], 4, 2, 64);
    const [qg, kg, vg, dg] = [q, k, v, dout].map((t) => t.cpu.to('cuda'));
    const run = (next: string | undefined) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() => {
      const f = A.opAttention(handleOf(qg), handleOf(kg), handleOf(vg), handleOf(cu.cpu), -0.125, 0);
      const b = A.opAttentionBackward(handleOf(dg), handleOf(qg), handleOf(kg), handleOf(vg), f.out, f.lse, handleOf(cu.cpu), -0.125, 0);
      return { out: host(f.out), dq: host(b.dq), dk: host(b.dk) };
    }));
    const verified = run('none'), got = run('flash_lean');
    expect(got.parts).not.toContain(FWD);
    expect(got.parts).not.toContain(DQ);
    for (const key of ['out', 'dq', 'dk'] as const) expectBits(got.value[key], verified.value[key], key, attentionLayout(key, [0, 100, 190], 4, 2, 64));
  });
});
