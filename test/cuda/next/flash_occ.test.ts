// INSTILL_CUDA_NEXT=flash_occ on the GPU: the D = 64 flash kernels held to fewer registers (3-4 CTAs an SM).
// A file of its own (test/cuda/common.ts says why); skipped where no GPU is seen, like test/cuda.
import { describe, expect, it } from 'vitest';

import { Tensor } from '../../../src/index.js';
import { handleOf } from '../../../src/tensor.js';
import { native } from '../../../src/native.js';
import { rng, seed } from '../../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { toleranceDiff } from '../../helpers/diff.js';
import { attentionInputs, attentionLayout, bits, hasCuda, host } from '../common.js';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=flash_occ', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  // INSTILL_CUDA_NEXT=flash_occ: the D = 64 kernels (one m-tile) held to 168 registers (128 for the pipelined
  // forward) so that 3-4 CTAs share an SM. The PTX is the verified kernels' (only the launch bounds differ), so
  // the results should be their bits; ptxas may still contract a mul and an add differently under another
  // register budget, so the bound is f32 rounding (1e-5 of the largest value), and the bits are reported.
  it.each([
    { segs: [0, 2048], h: 8, kvh: 2, kind: 'f32' },
    { segs: [0, 13, 50, 51, 90], h: 4, kvh: 2, kind: 'f32' },
    { segs: [0, 1, 200, 333], h: 4, kvh: 1, kind: 'f32', window: 40 },
    { segs: [0, 300, 701], h: 4, kvh: 2, kind: 'bf16' },  // bf16 activations (kIo16)
  ])('flash kernels with 3-4 CTAs an SM (INSTILL_CUDA_NEXT=flash_occ): $segs H=$h KVH=$kvh $kind', ({ segs, h, kvh, kind, window }) => {
    const A = native();
    const d = 64, n = segs[segs.length - 1], w = window ?? 0;
    const { q, k, v, dout, cu, scale } = attentionInputs(r, segs, h, kvh, d);
    const dev = (t: { cpu: Tensor }) => (kind === 'bf16' ? Tensor.from(t.cpu.toArray() as Float32Array, t.cpu.shape, { dtype: 'bf16' }).to('cuda') : t.cpu.to('cuda'));
    const [qg, kg, vg, dg] = [dev(q), dev(k), dev(v), dev(dout)];
    const run = (occ: boolean, mode?: string) => withEnv('INSTILL_CUDA_NEXT', occ ? 'flash_occ' : 'none', () => withEnv('INSTILL_CUDA_ATTENTION', mode, () => {
      const { value, parts } = withOpProfile(() => {
        const f = A.opAttention(handleOf(qg), handleOf(kg), handleOf(vg), handleOf(cu.cpu), scale, w);
        const b = A.opAttentionBackward(handleOf(dg), handleOf(qg), handleOf(kg), handleOf(vg), f.out, f.lse, handleOf(cu.cpu), scale, w);
        return { out: host(f.out), lse: host(f.lse), dq: host(b.dq), dk: host(b.dk), dv: host(b.dv) };
      });
      return { ...value, parts };
    }));
    for (const mode of kind === 'bf16' ? [undefined] : [undefined, 'pipelined']) {
      const verified = run(false, mode), occ = run(true, mode);
      const fwdPart = 'attention_forward/flash kernel, 3-4 CTAs an SM (next)';
      expect(verified.parts).not.toContain(fwdPart);
      expect(occ.parts).toContain(fwdPart);
      expect(occ.parts).toContain('attention_backward/dq kernel, 3 CTAs an SM (next)');
      expect(occ.parts.some((p) => p.startsWith('attention_backward/dk dv kernel') && p.endsWith('3 CTAs an SM (next)'))).toBe(true);
      const bitsSame: string[] = [];
      for (const key of ['out', 'lse', 'dq', 'dk', 'dv'] as const) {
        const a = occ[key], b = verified[key];
        expect(a.every((x) => Number.isFinite(x)), key).toBe(true);
        let diff = 0, mag = 0;
        for (let i = 0; i < b.length; i++) {
          diff = Math.max(diff, Math.abs(a[i] - b[i]));
          mag = Math.max(mag, Math.abs(b[i]));
        }
        const where = diff / mag <= 1e-5 ? '' : `; ${toleranceDiff(a, b, 1e-5, attentionLayout(key, segs, h, kvh, d))}`;
        expect(diff / mag, `${key} (mode ${mode ?? 'default'})${where}`).toBeLessThanOrEqual(1e-5);
        if (bits(a).equals(bits(b))) bitsSame.push(key);
      }
      console.log(`flash_occ ${kind} n ${n} mode ${mode ?? 'default'}: the verified kernels' bits for ${bitsSame.join(', ') || 'none'}`);
    }
  });
});
