// INSTILL_CUDA_NEXT=ce_bf16 on the GPU (native/cuda/cross_entropy.cu): linear_cross_entropy with a bf16 head computes
// its logits in bf16 (the product's f32 sums rounded once, as transformers' bf16 LM head does), and with gradients
// writes them into the chunk's dlogits rows, which the softmax kernel overwrites in place: one logits product a chunk
// and no f32 logits buffer. Checked against float64 on the logits rounded to bf16 (what the kernels see), and against
// the f32-logits paths within bf16 tolerance. A file of its own (test/cuda/common.ts says why); skipped where no GPU
// is seen.
import { describe, expect, it } from 'vitest';

import { kernels, runtime } from '../../../src/index.js';
import { native } from '../../../src/native.js';
import { crossEntropy64, matmul64, randn, rng, roundBf16 } from '../../../bench/kernels/reference.js';
import { relNorm } from '../../helpers/compare.js';
import { withEnv } from '../../helpers/env.js';
import { poisonAndRestoreIsa } from '../../helpers/kernels.js';
import { withOpProfile } from '../../helpers/profile.js';
import { BF16_TOL, close, closeLinearCeGrads, hasCuda, host, pair } from '../common.js';

const LOGITS = 'linear_cross_entropy/logits = h W^T (a sub-chunk)';
// (on by default since run 20: OFF is the default without it, the f32 logits path)
const ON = 'default,ce_bf16', OFF = 'default,-ce_bf16';

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=ce_bf16', () => {
  poisonAndRestoreIsa();

  // V off every multiple of 8 (the rows' float4 path and its scalar tail), rows off 64, ignored rows among them
  it.each([
    { chunkRows: 0, dh: true, dw: false },
    { chunkRows: 70, dh: true, dw: true },  // four chunks of the 260 kept rows, the last of 50
    { chunkRows: 0, dh: false, dw: false },  // no gradients: a bf16 logits buffer of its own
  ])('float64 on bf16 logits: n 303, C 45, V 5003 (chunkRows $chunkRows, dh $dh, dW $dw)', ({ chunkRows, dh, dw }) => {
    const r = rng(2511);
    const n = 303, c = 45, v = 5003;
    const h = randn(r, n * c, 2), w = roundBf16(randn(r, v * c, 0.5));
    const t = Int32Array.from({ length: n }, (_, i) => (i % 7 === 3 ? -100 : Math.floor(r() * v)));
    const H = pair(h, [n, c]), W = pair(w, [v, c], 'bf16'), T = pair(t, [n]);
    const got = withEnv('INSTILL_CUDA_NEXT', ON, () => withOpProfile(() => kernels.linearCrossEntropy({
      h: H.gpu, w: W.gpu, targets: T.gpu, needInputGrad: dh, needWeightGrad: dw, chunkRows })));
    const kept = t.filter((x) => x !== -100).length;
    expect(got.value.count).toBe(kept);
    expect(got.calls[LOGITS]).toBe(chunkRows ? Math.ceil(kept / chunkRows) : 1);
    // what the kernels compute: h rounded to bf16 (the gathered rows), each logit rounded to bf16 from its sum
    const hb = roundBf16(h);
    const exact = matmul64(n, v, c, (i, k) => hb[i * c + k], (k, j) => w[j * c + k]);
    const logits16 = roundBf16(Float32Array.from(exact));
    const ref = crossEntropy64(logits16, t, n, v);
    // the f32 sums and float64's round to different bf16 neighbours now and then: a bf16 step (up to 0.04 here) in a
    // few logits, ~1.4e-5 of the loss if one is a target's (on the CPU, f32 logits give 2.0e-5 against this reference)
    expect(Math.abs(got.value.loss - ref.loss) / ref.loss).toBeLessThan(5e-5);
    // and the loss on unrounded logits, within what bf16 logits may cost
    expect(Math.abs(got.value.loss - crossEntropy64(exact, t, n, v).loss) / ref.loss).toBeLessThan(BF16_TOL);
    closeLinearCeGrads(got.value, ref.dlogits, w, hb, [n, c, v], { dh, dw });
  });

  it('V 128256: one logits product instead of 3, ~260 MB less peak, the f32 path\'s loss and dh within bf16 rounding', () => {
    const r = rng(2512);
    const n = 1600, c = 40, v = 128256;
    const h = pair(randn(r, n * c), [n, c]);
    const w = pair(randn(r, v * c, 0.2), [v, c], 'bf16');
    const T = pair(Int32Array.from({ length: n }, (_, i) => (i % 16 === 5 ? -100 : Math.floor(r() * v))), [n]);
    const run = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => {
      const before = native().deviceMemoryStats('cuda', true).inUse;
      const out = withOpProfile(() => kernels.linearCrossEntropy({ h: h.gpu, w: w.gpu, targets: T.gpu }));
      return { ...out, peak: native().deviceMemoryStats('cuda').peak - before };
    });
    const plain = run(OFF);
    const b16 = run(ON);
    expect(plain.calls[LOGITS]).toBe(3);
    expect(b16.calls[LOGITS]).toBe(1);
    expect(b16.value.count).toBe(1500);
    if (runtime.info().cuda!.gemm.startsWith('cuBLASLt')) {
      // the f32 sub-chunk (512 rows × 128256 × 4 bytes) is gone; the dlogits rows (1500 × 128256 × 2) stay
      expect(plain.peak - b16.peak).toBeGreaterThan(250e6);
    } else {
      // the WMMA kernel writes f32: its bf16 C goes through an f32 scratch of at most 256 MiB (523 rows at a time),
      // not the whole 770 MB product, so the peak is the f32 path's within the 6 MB the scratch's rows differ by
      expect(b16.peak - plain.peak).toBeLessThan(16e6);
    }
    expect(Math.abs(b16.value.loss - plain.value.loss) / plain.value.loss).toBeLessThan(1e-3);
    expect(relNorm(host(b16.value.dh), host(plain.value.dh))).toBeLessThan(2e-2);
    const ref = kernels.linearCrossEntropy({ h: h.cpu, w: w.cpu, targets: T.cpu });
    expect(Math.abs(b16.value.loss - ref.loss) / ref.loss).toBeLessThan(BF16_TOL);
    close(host(b16.value.dh), ref.dh!.toArray(), BF16_TOL, 'dh');
  });
});
