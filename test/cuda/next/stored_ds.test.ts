// INSTILL_CUDA_NEXT=stored_ds on the GPU: the flash backward at D = 64 with the dK/dV kernel storing dSᵀ and
// dQ = dS·K read from it (flash_dq_ds_kernel), instead of the dQ kernel computing S and dP again.
// A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen, like test/cuda.
import { describe, expect, it } from 'vitest';

import { Tensor } from '../../../src/index.js';
import { native } from '../../../src/native.js';
import { handleOf } from '../../../src/tensor.js';
import { rng, seed } from '../../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { relError } from '../../helpers/compare.js';
import { attentionInputs, attentionLayout, BF16_TOL, close, expectBits, hasCuda, host } from '../common.js';

const DQ_PART = 'attention_backward/dq from the stored dS (next)';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=stored_ds', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  // The dK/dV kernel's arithmetic is the verified one's (it only stores what it computed): dk and dv keep their
  // bits. dQ sums the same bf16 dS·K products per 16-key slice, but its dS is the dK/dV kernel's (Sᵀ = K·Qᵀ
  // accumulated the other way round, so a bf16 rounding may land one step apart): close to the verified dq,
  // within bf16 tolerance of the CPU. Segments not a multiple of 64, packed rows, a window, GQA, both dK/dV
  // modes (per query head below 4 CTAs an SM, per group above), bf16 activations, D 64 and 128 (whose dK/dV
  // query tiles of 32 fill half a stored tile each). The scratch comes from the allocator poisoned (0xff bytes:
  // bf16 NaNs, poisonAndRestoreIsa), so what the dK/dV kernel leaves unwritten must be masked by the dQ kernel.
  // INSTILL_CUDA_ATTENTION=flash (the synchronous backward, on f32 tiles) stores nothing: the dQ kernel's bits.
  it.each([
    { segs: [0, 333], h: 4, kvh: 2, d: 64, window: 0, kind: 'f32' },
    { segs: [0, 2048], h: 8, kvh: 2, d: 64, window: 0, kind: 'f32' },
    { segs: [0, 13, 50, 51, 90], h: 4, kvh: 2, d: 64, window: 0, kind: 'f32' },
    { segs: [0, 1, 200, 333], h: 4, kvh: 2, d: 64, window: 40, kind: 'f32' },
    { segs: [0, 2500, 4300], h: 16, kvh: 8, d: 64, window: 0, kind: 'f32' },  // dK/dV per group (no split)
    { segs: [0, 300, 701], h: 4, kvh: 2, d: 64, window: 0, kind: 'bf16' },
    { segs: [0, 150, 300], h: 8, kvh: 2, d: 128, window: 0, kind: 'f32' },
    { segs: [0, 7, 100, 229], h: 4, kvh: 1, d: 128, window: 50, kind: 'f32' },
    { segs: [0, 300, 701], h: 4, kvh: 2, d: 128, window: 0, kind: 'bf16' },
    { segs: [0, 13, 50, 51, 90], h: 4, kvh: 2, d: 64, window: 0, kind: 'f32', mode: 'flash' },  // nothing stored
  ])('attention backward, dQ from the stored dS: $segs H=$h KVH=$kvh D=$d window=$window $kind $mode', ({ segs, h, kvh, d, window, kind, mode }) => {
    const A = native();
    const { q, k, v, dout, cu, scale } = attentionInputs(r, segs, h, kvh, d);
    const at = (key: 'dq' | 'dk' | 'dv') => attentionLayout(key, segs, h, kvh, d);
    const dev = (t: { cpu: Tensor }) => (kind === 'bf16' ? Tensor.from(t.cpu.toArray() as Float32Array, t.cpu.shape, { dtype: 'bf16' }).to('cuda') : t.cpu.to('cuda'));
    const [qg, kg, vg, dg] = [dev(q), dev(k), dev(v), dev(dout)];
    const fwd = A.opAttention(handleOf(qg), handleOf(kg), handleOf(vg), handleOf(cu.cpu), scale, window);
    const run = (stored: boolean) => withEnv('INSTILL_CUDA_NEXT', stored ? 'stored_ds' : 'none', () => withEnv('INSTILL_CUDA_ATTENTION', mode, () => {
      const { value, parts } = withOpProfile(() => {
        const b = A.opAttentionBackward(handleOf(dg), handleOf(qg), handleOf(kg), handleOf(vg), fwd.out, fwd.lse, handleOf(cu.cpu), scale, window);
        return { dq: host(b.dq) as Float32Array, dk: host(b.dk) as Float32Array, dv: host(b.dv) as Float32Array };
      });
      return { ...value, parts };
    }));
    const verified = run(false), stored = run(true), again = run(true);
    expect(verified.parts).not.toContain(DQ_PART);
    if (mode === 'flash') {  // nothing stored: the same kernels, the same bits
      expect(stored.parts).not.toContain(DQ_PART);
      for (const key of ['dq', 'dk', 'dv'] as const) expectBits(stored[key], verified[key], key, at(key));
      return;
    }
    expect(stored.parts).toContain(DQ_PART);
    expect(stored.parts).not.toContain('attention_backward/dq kernel');
    expect(stored.parts.some((p) => p.startsWith('attention_backward/dk dv kernel') && p.includes('storing dS (next)'))).toBe(true);
    for (const key of ['dk', 'dv'] as const) expectBits(stored[key], verified[key], `${key}: the verified kernel's bits`, at(key));
    // deterministic, and blind to what the scratch held before (tiles the dK/dV kernel skips stay unwritten)
    for (const key of ['dq', 'dk', 'dv'] as const) expectBits(again[key], stored[key], `${key}: a second run`, at(key));
    expect(stored.dq.every(Number.isFinite)).toBe(true);
    console.log(`stored_ds ${kind} N ${segs[segs.length - 1]}: dq max |stored − verified| / max |verified| = ${relError(stored.dq, verified.dq).toExponential(2)}`);
    close(stored.dq, verified.dq, 1e-2, 'dq against the verified kernel', at('dq'));
    if (kind === 'f32') {
      const ref = A.opAttention(handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), handleOf(cu.cpu), scale, window);
      const refB = A.opAttentionBackward(handleOf(dout.cpu), handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), ref.out, ref.lse, handleOf(cu.cpu), scale, window);
      close(stored.dq, refB.dq.toArray(), BF16_TOL, 'dq against the CPU', at('dq'));
    }
  });
});
