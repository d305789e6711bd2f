// INSTILL_CUDA_NEXT=ce_cluster on the GPU (native/cuda/cross_entropy.cu): the bf16 softmax of linear_cross_entropy
// (ce_bf16's logits) a row a cluster of 8 blocks, each holding its eighth of the row in registers, the blocks' maxima
// and sums combined through distributed shared memory, so that the row is read once. Its sums run in another order
// than ce_rows_kernel's, so it is held to float64 on the same bf16 logits, and to the plain kernel within f32
// rounding (the loss) and one bf16 rounding of some dlogits (dh, dW). Cases: V off every multiple of 8 and of the
// segments (5003), a vocabulary small enough to leave blocks of the cluster without a column (100), the largest V
// it takes (131072, every chunk of every thread full) and one past it (131073: the plain kernel), Llama 3's 128256,
// rows in chunks, no gradients, an f32 head (the plain f32 path), and the model's pass. Taken on compute capability
// 9.0 only (elsewhere the plain kernel, which these cases then expect). A file of its own (test/cuda/common.ts says
// why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { kernels } from '../../../src/index.js';
import { crossEntropy64, matmul64, randn, rng, roundBf16 } from '../../../bench/kernels/reference.js';
import { relNorm } from '../../helpers/compare.js';
import { withEnv } from '../../helpers/env.js';
import { withOpProfile } from '../../helpers/profile.js';
import { HOPPER, closeLinearCeGrads, expectNearPass, hasCuda, host, pair, pieceLoraModel, pieceModelConfig, PIECE_BATCH } from '../common.js';

const CLUSTER = 'linear_cross_entropy/softmax, loss and dlogits, a row a cluster (next)';
const PLAIN = 'linear_cross_entropy/softmax, loss and dlogits (a sub-chunk)';
const ON = 'default,ce_cluster', OFF = 'default,-ce_cluster';

/** linear_cross_entropy on the GPU under `next`, with a random (n, c) h, a bf16 (v, c) head and every 7th row ignored. */
function lce(seed: number, n: number, c: number, v: number, opts: { chunkRows?: number; dh?: boolean; dw?: boolean; head?: 'bf16' | 'f32' } = {}) {
  const { chunkRows = 0, dh = true, dw = false, head = 'bf16' } = opts;
  const r = rng(seed);
  const h = randn(r, n * c, 2), w = roundBf16(randn(r, v * c, 0.5));
  // targets spread over the whole vocabulary, so that they fall in every block's segment
  const t = Int32Array.from({ length: n }, (_, i) => (i % 7 === 3 ? -100 : Math.floor(r() * v)));
  const H = pair(h, [n, c]), W = pair(w, [v, c], head), T = pair(t, [n]);
  const run = (next: string) => withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() => kernels.linearCrossEntropy({
    h: H.gpu, w: W.gpu, targets: T.gpu, needInputGrad: dh, needWeightGrad: dw, chunkRows })));
  return { h, w, t, run };
}

/** float64 on what the kernels see: h rounded to bf16, each logit rounded to bf16 from its sum. */
function reference(h: Float32Array, w: Float32Array, t: Int32Array, n: number, c: number, v: number) {
  const hb = roundBf16(h);
  const exact = matmul64(n, v, c, (i, k) => hb[i * c + k], (k, j) => w[j * c + k]);
  return { hb, ref: crossEntropy64(roundBf16(Float32Array.from(exact)), t, n, v) };
}

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=ce_cluster', () => {
  const want = HOPPER ? CLUSTER : PLAIN;

  it.each([
    { n: 303, c: 45, v: 5003, chunkRows: 0, dh: true, dw: false },
    { n: 303, c: 45, v: 5003, chunkRows: 70, dh: true, dw: true },  // four chunks of the 260 kept rows
    { n: 303, c: 45, v: 5003, chunkRows: 0, dh: false, dw: false },  // no gradients: the logits in a buffer of their own
    { n: 90, c: 24, v: 100, chunkRows: 0, dh: true, dw: true },  // 16 columns a block: blocks 7 holds 0, 6 only 4
    { n: 22, c: 8, v: 131072, chunkRows: 0, dh: true, dw: false },  // the largest V it takes: every chunk full
  ])('float64 on bf16 logits: n $n, C $c, V $v (chunkRows $chunkRows, dh $dh, dW $dw)', ({ n, c, v, chunkRows, dh, dw }) => {
    const { h, w, t, run } = lce(2600 + v + chunkRows, n, c, v, { chunkRows, dh, dw });
    const got = run(ON);
    const kept = t.filter((x) => x !== -100).length;
    expect(got.value.count).toBe(kept);
    const subChunks = chunkRows ? Math.ceil(kept / chunkRows) : 1;
    expect(got.calls[want]).toBe(subChunks);
    if (HOPPER) expect(got.calls[PLAIN]).toBeUndefined();
    const { hb, ref } = reference(h, w, t, n, c, v);
    // as ce_bf16's test: the product's f32 sums and float64's round a few logits to different bf16 neighbours (~1.4e-5
    // of the loss where one is a target's); a segment or a chunk left out would move it by far more
    expect(Math.abs(got.value.loss - ref.loss) / ref.loss).toBeLessThan(5e-5);
    closeLinearCeGrads(got.value, ref.dlogits, w, hb, [n, c, v], { dh, dw });
    // and against the plain kernel on the same logits (the same product's bits): the loss to f32 rounding (its sums in
    // another order), the gradient to one bf16 rounding of some dlogits
    const plain = run(OFF);
    expect(plain.calls[PLAIN]).toBe(subChunks);
    expect(plain.calls[CLUSTER]).toBeUndefined();
    expect(Math.abs(got.value.loss - plain.value.loss) / plain.value.loss).toBeLessThan(2e-6);
    if (dh) expect(relNorm(host(got.value.dh), host(plain.value.dh))).toBeLessThan(5e-3);
  });

  it('V 131073, one past what a cluster holds, and an f32 head: the plain kernels', () => {
    const big = lce(2701, 20, 8, 131073).run(ON);
    expect(big.calls[PLAIN]).toBe(1);
    expect(big.calls[CLUSTER]).toBeUndefined();
    const f32 = lce(2702, 60, 16, 5003, { head: 'f32' }).run(ON);
    expect(f32.calls[CLUSTER]).toBeUndefined();
    expect(f32.calls[PLAIN]).toBe(1);
  });

  it('V 128256 (Llama 3): the loss and dh within rounding of the plain kernel\'s and of the CPU', () => {
    const n = 700, c = 40, v = 128256;
    const { run } = lce(2703, n, c, v);
    const got = run(ON), plain = run(OFF);
    expect(got.calls[want]).toBe(1);
    expect(Math.abs(got.value.loss - plain.value.loss) / plain.value.loss).toBeLessThan(2e-6);
    expect(relNorm(host(got.value.dh), host(plain.value.dh))).toBeLessThan(5e-3);
  });

  it('the model\'s pass: the loss and LoRA gradients within rounding of the plain kernel\'s', async () => {
    const m = pieceLoraModel(pieceModelConfig(200, 344), 71, (i, name) => 0.05 * Math.sin(0.31 * i + name.length));
    const on = await withEnv('INSTILL_CUDA_NEXT', ON, () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
    const off = await withEnv('INSTILL_CUDA_NEXT', OFF, () => withOpProfile(() => m.lossAndGrads(PIECE_BATCH)));
    expect(on.calls[want]).toBe(1);
    expect(off.calls[CLUSTER]).toBeUndefined();
    expectNearPass(on.value, off.value, 'ce_cluster against the plain kernel');
    m.dispose();
  });
});
