// What the GPU test files share (test/cuda/*.test.ts, test/cuda/next/*.test.ts): the CPU/CUDA pairs, the
// tolerances and comparisons, and the cases that run both on the verified kernels (test/cuda/ops.test.ts) and
// on a next piece (INSTILL_CUDA_NEXT, test/cuda/next/<piece>.test.ts). Each piece's tests live in a file of
// their own because vitest runs each file in its own process: a piece whose kernel faults (a CUDA error
// that poisons the process's context) then fails only its own tests, not the verified ones nor the other
// pieces' (bench/gpu-check.sh leaves the pieces that failed tests name out of its A/Bs: bench/gpu/pieces.py).
//
// Tolerances: ops whose CUDA kernels are f32 arithmetic (rmsnorm, rope, swiglu,
// adamw, embedding, masked CE, attention decode, attention at head dims the
// tensor-core path does not take or with INSTILL_CUDA_ATTENTION=simple) 1e-4 of
// the output's largest value; ops on the tensor cores (matmul, lora_linear,
// linear CE, attention at D 64 / 128) round operands to bf16: 2e-2.
import { expect } from 'vitest';

import { Tensor, kernels, runtime } from '../../src/index.js';
import { LORA_TARGETS, randomModel, type LoraTarget, type LossAndGradsResult, type Model } from '../../src/model/model.js';
import { native, type TensorHandle } from '../../src/native.js';
import { handleOf } from '../../src/tensor.js';
import { matmul64, randn, rng, roundBf16, seed } from '../../bench/kernels/reference.js';
import { relErr, relNorm } from '../helpers/compare.js';
import { beyondDiff, bitsDiff, type Layout, toleranceDiff } from '../helpers/diff.js';
import { withEnv } from '../helpers/env.js';
import { withOpProfile } from '../helpers/profile.js';

// The default before run 17 promoted fewer_packs, factor_pack and rope_qk, and before run 16 promoted lora_group,
// swiglu_pack and norm_pack: a promoted piece's tests add it to the default it was measured on, so that they compare
// the pass without the piece and with it, not the new default twice. Both also leave out attn_pack and dqkv_pack
// (promoted in run 22), which take packs off the counts those tests were written for.
export const DEFAULT_BEFORE_RUN17 = 'default,-fewer_packs,-factor_pack,-rope_qk,-attn_pack,-dqkv_pack';
export const DEFAULT_BEFORE_GROUPS = `${DEFAULT_BEFORE_RUN17},-lora_group,-swiglu_pack,-norm_pack`;
export const hasCuda = runtime.info().devices.includes('cuda');
if (!hasCuda) console.warn(`skipping test/cuda: ${native().deviceUnavailableReason('cuda')}`);

export const F32_TOL = 1e-4;
export const BF16_TOL = 2e-2;

export type Rng = ReturnType<typeof rng>;

export const host = (t: Tensor | TensorHandle | null | undefined): Float32Array | Int32Array => {
  if (!t) throw new Error('missing tensor');
  return t instanceof Tensor ? t.to('cpu').toArray() : native().tensorTo(t, 'cpu').toArray();
};

/** The same data as a CPU tensor and a CUDA tensor. */
export function pair(data: Float32Array | Int32Array, shape: number[], dtype: 'f32' | 'bf16' | 'i32' = data instanceof Int32Array ? 'i32' : 'f32') {
  const cpu = Tensor.from(data, shape, { dtype });
  return { cpu, gpu: cpu.to('cuda') };
}

/** The rope pieces' inputs: bf16 q (n, h, d) and k (n, h2, d), positions that jump past 1000 halfway, Llama 3's
 * inverse frequencies (base 500000). */
export function ropePairInputs(r: Rng, n: number, h: number, h2: number, d: number) {
  return {
    x: pair(randn(r, n * h * d), [n, h, d], 'bf16'),
    x2: pair(randn(r, n * h2 * d), [n, h2, d], 'bf16'),
    pos: pair(Int32Array.from({ length: n }, (_, i) => (i < n / 2 ? i : 3 * i + 1000)), [n]),
    inv: pair(Float32Array.from({ length: d / 2 }, (_, i) => 500000 ** (-(2 * i) / d)), [d / 2]),
  };
}

// LoRA's narrow products in the 1B step (u, dA, g, dB): outputs of a few 128 x 128 tiles over K in the thousands,
// the shapes split-K is for (cuBLASLt tuning's variants, INSTILL_CUDA_NEXT=split_k); sizes off every tile.
export const NARROW_MATMUL_CASES = [
  { what: 'u = x Aᵀ', m: 2047, k: 2048, n: 48, ta: false, tb: true },
  { what: 'dA = gᵀ x (K = tokens)', m: 48, k: 2043, n: 2048, ta: true, tb: false },
  { what: 'g = dy B (K = gate/up outputs)', m: 2047, k: 8192, n: 16, ta: false, tb: false },
  { what: 'dB = dyᵀ u', m: 3072, k: 2047, n: 48, ta: true, tb: false },
];

/** A bf16 matmul case on both devices: run(out) multiplies on the GPU into out (a fresh NaN-poisoned one when
 * not given) and returns the result on the host; ref is the CPU's product. */
export function bf16Matmul(r: Rng, { m, k, n, ta, tb }: { m: number; k: number; n: number; ta: boolean; tb: boolean }) {
  const a = pair(randn(r, m * k), ta ? [k, m] : [m, k], 'bf16');
  const b = pair(randn(r, k * n), tb ? [n, k] : [k, n], 'bf16');
  const ref = kernels.matmul({ a: a.cpu, b: b.cpu, transA: ta, transB: tb }).toArray();
  const run = (out = Tensor.from(new Float32Array(m * n).fill(Number.NaN), [m, n]).to('cuda')) =>
    host(kernels.matmul({ a: a.gpu, b: b.gpu, transA: ta, transB: tb, out }));
  return { ref, run };
}

/** The 2-layer bf16 Llama the pieces' model tests share (test/cuda/next: swiglu_pack, norm_pack, fewer_packs,
 * factor_pack), hidden and intermediate varied (rows of 16 bytes or not), and its one 150-token row. */
export const pieceModelConfig = (hidden: number, intermediate: number) => ({
  model_type: 'llama', hidden_size: hidden, intermediate_size: intermediate, num_hidden_layers: 2, num_attention_heads: 4,
  num_key_value_heads: 2, head_dim: 50, vocab_size: 301, rms_norm_eps: 1e-5, tie_word_embeddings: true,
  max_position_embeddings: 512,
});
const pieceIds = Array.from({ length: 150 }, (_, i) => (i * 37 + 11) % 301);
export const PIECE_BATCH = { inputIds: [pieceIds], labels: [pieceIds] };

/** The pieces' model: randomModel(config) in bf16 on the GPU with a LoRA adapter (r 8, adapter seed 5) on `targets`,
 * every lora_B element i of tensor `name` set to b(i, name) (nonzero, so that the low-rank term reaches y). */
export function pieceLoraModel(config: unknown, seed: number, b: (i: number, name: string) => number,
  { alpha = 16, targets = LORA_TARGETS }: { alpha?: number; targets?: readonly LoraTarget[] } = {}): Model {
  const m = randomModel(config, { seed, device: 'cuda', dtype: 'bf16' });
  m.addLora({ r: 8, alpha, targetModules: [...targets], seed: 5 });
  const w = m.adapterWeights();
  for (const n of Object.keys(w)) if (n.includes('lora_B')) w[n] = w[n].map((_, i) => b(i, n));
  m.setAdapterWeights(w);
  return m;
}

/** How many LoRA gradient elements of two passes differ in bits (for the logs). */
export function gradBitsDiffer(got: LossAndGradsResult, want: LossAndGradsResult): number {
  let differ = 0;
  for (const n of Object.keys(want.grads)) {
    const b = want.grads[n];
    differ += got.grads[n].reduce((k, v, i) => k + (Object.is(v, b[i]) ? 0 : 1), 0);
  }
  return differ;
}

/** Two model passes that should agree to rounding (the same arithmetic in other kernels): the loss within 1e-5,
 * each LoRA gradient within 1e-3 (relative norm). Returns, for the log, how many gradient elements differ in bits
 * and the worst tensor's distance. */
export function expectSamePass(got: LossAndGradsResult, want: LossAndGradsResult): { differ: number; worst: number } {
  return { differ: gradBitsDiffer(got, want), worst: expectPassWithin(got, want, 1e-5, 1e-3, 'the same pass') };
}

/** The loss within lossTol (relative) and each LoRA gradient within gradTol (relative norm); the worst gradient's
 * distance. */
function expectPassWithin(got: LossAndGradsResult, want: LossAndGradsResult, lossTol: number, gradTol: number, what: string): number {
  expect(Math.abs(got.loss - want.loss) / want.loss, `${what}: loss`).toBeLessThan(lossTol);
  let worst = 0;
  for (const n of Object.keys(want.grads)) {
    const e = relNorm(got.grads[n], want.grads[n]);
    worst = Math.max(worst, e);
    expect(e, `${what}: ${n} (seed ${seed})`).toBeLessThan(gradTol);
  }
  return worst;
}

/** A linear cross-entropy's dh and dW (null where not asked for) against float64 on the reference's dlogits: dh =
 * dlogits·W, dW = dlogitsᵀ·h (w (v, c) as the kernels read it, hb the h rows as they see them), each within 1e-2 (the
 * dlogits are rounded to bf16 once). */
export function closeLinearCeGrads(got: { dh: Tensor | null; dw: Tensor | null }, dlogits: Float64Array, w: Float32Array,
  hb: Float32Array, [n, c, v]: [number, number, number], { dh, dw }: { dh: boolean; dw: boolean }): void {
  if (dh) {
    close(host(got.dh), matmul64(n, c, v, (i, k) => dlogits[i * v + k], (k, j) => w[k * c + j]), 1e-2, 'dh');
  } else {
    expect(got.dh).toBeNull();
  }
  if (dw) close(host(got.dw), matmul64(v, c, n, (i, k) => dlogits[k * v + i], (k, j) => hb[k * c + j]), 1e-2, 'dw');
}

/** max |got − ref| / max |ref| below tol; where not, the message says where (test/helpers/diff.ts; with layout, by row). */
export function close(got: ArrayLike<number>, ref: ArrayLike<number>, tol: number, what: string, layout?: Layout): void {
  const e = relErr(got, ref);
  const where = e < tol ? '' : `; ${toleranceDiff(got, ref, tol, layout)}`;
  expect(e, `${what}: relative error ${e} (seed ${seed})${where}`).toBeLessThan(tol);
}

/** got holds ref's bits; where not, the message says where they differ (test/helpers/diff.ts; with layout, by row). */
export function expectBits(got: ArrayLike<number>, ref: ArrayLike<number>, what: string, layout?: Layout): void {
  const d = bitsDiff(got, ref, layout);
  expect(d, `${what}: ${d} (seed ${seed})`).toBeNull();
}

/**
 * max |got − ref| / max |mag|, where mag is the same product on the inputs' absolute values: the scale of a
 * sum's rounding error when its terms cancel (a 1×1 LoRA output x·w + s·u·b near 0 made `close` flaky).
 */
export function closeScaled(got: ArrayLike<number>, ref: ArrayLike<number>, mag: ArrayLike<number>, tol: number, what: string,
                            shape?: number[]): void {
  let d = 0, m = 0;
  for (let i = 0; i < ref.length; i++) {
    d = Math.max(d, Math.abs(got[i] - ref[i]));
    m = Math.max(m, Math.abs(mag[i]));
  }
  const e = m === 0 ? d : d / m;
  const where = e < tol ? '' : `; ${beyondDiff(got, ref, tol * (m === 0 ? 1 : m), shape && { shape }, `${tol} of the terms' magnitude`)}`;
  expect(e, `${what}: error ${e} of the terms' magnitude (seed ${seed})${where}`).toBeLessThan(tol);
}

/** closeScaled for an output added into a tensor that held `init`: ref + init, at the magnitude mag + |init|. */
export function closeAccumulated(got: ArrayLike<number>, ref: ArrayLike<number>, mag: ArrayLike<number>, init: Float32Array, what: string,
                                 shape?: number[]): void {
  closeScaled(got, Array.from(ref, (v, i) => v + init[i]), Array.from(mag, (v, i) => v + Math.abs(init[i])), BF16_TOL, what, shape);
}

/** The bytes of a typed array (its view only): `bits(a).equals(bits(b))` compares results bit for bit (expectBits says where they differ). */
export const bits = (a: Float32Array | Int32Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

export const abs = (t: Tensor): Tensor => Tensor.from((t.toArray() as Float32Array).map(Math.abs), t.shape, { dtype: t.dtype as 'f32' | 'bf16' });

/** loraLinear forward + backward, w bf16, on the verified kernels (INSTILL_CUDA_NEXT=none), against the CPU. */
export const LORA_CASES = [
  { n: 37, inF: 123, outF: 77, rank: 5, bias: true },
  { n: 1, inF: 1, outF: 1, rank: 1, bias: false },
  { n: 300, inF: 130, outF: 515, rank: 16, bias: false },
  // widths that are multiples of 4 (the packs' vector path) and of 8 (W copied 16 bytes a thread), rank > 32
  { n: 45, inF: 1028, outF: 200, rank: 5, bias: false },
  { n: 203, inF: 136, outF: 516, rank: 16, bias: true },
  { n: 61, inF: 260, outF: 36, rank: 37, bias: false },
  // K and N in the thousands (long sums in the rank-r products)
  { n: 700, inF: 1100, outF: 2100, rank: 16, bias: false },
];

export function loraForwardBackward(r: Rng, { n, inF, outF, rank, bias }: (typeof LORA_CASES)[number]): void {
  // (read per call) the profile's parts show which kernels ran: W and B packed into a [W | B] made for the call
  const { parts } = withOpProfile(() => withEnv('INSTILL_CUDA_NEXT', 'none', () => loraCase(r, n, inF, outF, rank, bias)));
  expect(parts).toContain('lora_linear_forward/pack [W | B]');
}

function loraCase(r: Rng, n: number, inF: number, outF: number, rank: number, bias: boolean): void {
  const x = pair(randn(r, n * inF), [n, inF]);
  const w = pair(randn(r, outF * inF, 0.1), [outF, inF], 'bf16');
  const a = pair(randn(r, rank * inF, 0.1), [rank, inF]);
  const b = pair(randn(r, outF * rank, 0.1), [outF, rank]);
  const bs = bias ? pair(randn(r, outF), [outF]) : undefined;
  const scale = 2;
  const ref = kernels.loraLinear({ x: x.cpu, w: w.cpu, a: a.cpu, b: b.cpu, bias: bs?.cpu, scale });
  const got = kernels.loraLinear({ x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, bias: bs?.gpu, scale });
  const mag = kernels.loraLinear({ x: abs(x.cpu), w: abs(w.cpu), a: abs(a.cpu), b: abs(b.cpu), bias: bs && abs(bs.cpu), scale });
  closeScaled(host(got.y), ref.y.toArray(), mag.y.toArray(), BF16_TOL, 'y', got.y.shape);
  closeScaled(host(got.u), ref.u.toArray(), mag.u.toArray(), BF16_TOL, 'u', got.u.shape);
  const dy = pair(randn(r, n * outF), [n, outF]);
  const refB = kernels.loraLinearBackward({ dy: dy.cpu, x: x.cpu, w: w.cpu, a: a.cpu, b: b.cpu, u: ref.u, scale });
  const gotB = kernels.loraLinearBackward({ dy: dy.gpu, x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, u: ref.u.to('cuda'), scale });
  const magB = kernels.loraLinearBackward({ dy: abs(dy.cpu), x: abs(x.cpu), w: abs(w.cpu), a: abs(a.cpu), b: abs(b.cpu), u: mag.u, scale });
  closeScaled(host(gotB.dx), refB.dx!.toArray(), magB.dx!.toArray(), BF16_TOL, 'dx', [n, inF]);
  closeScaled(host(gotB.da), refB.da.toArray(), magB.da.toArray(), BF16_TOL, 'da', gotB.da.shape);
  closeScaled(host(gotB.db), refB.db.toArray(), magB.db.toArray(), BF16_TOL, 'db', gotB.db.shape);
  // accumulateInputGrad: dx added into a given tensor (the model sums q, k, v's input gradients so)
  const dx0 = randn(r, n * inF);
  const dxAcc = Tensor.from(dx0, [n, inF]).to('cuda');
  kernels.loraLinearBackward({ dy: dy.gpu, x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, u: ref.u.to('cuda'), scale,
    out: { dx: dxAcc }, accumulateInputGrad: true });
  closeAccumulated(host(dxAcc), refB.dx!.toArray(), magB.dx!.toArray(), dx0, 'dx +=', dxAcc.shape);
  // accumulate: dA and dB added into given tensors
  const da0 = randn(r, rank * inF), db0 = randn(r, outF * rank);
  const daAcc = Tensor.from(da0, [rank, inF]).to('cuda'), dbAcc = Tensor.from(db0, [outF, rank]).to('cuda');
  kernels.loraLinearBackward({ dy: dy.gpu, x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, u: ref.u.to('cuda'), scale,
    out: { da: daAcc, db: dbAcc }, accumulate: true, needInputGrad: false });
  closeAccumulated(host(daAcc), refB.da.toArray(), magB.da.toArray(), da0, 'da +=', daAcc.shape);
  closeAccumulated(host(dbAcc), refB.db.toArray(), magB.db.toArray(), db0, 'db +=', dbAcc.shape);
}

// bf16 activations (the model's MLP on a GPU): x and dy bf16 in, y and dx bf16 out (the product's bf16 D;
// with a bias, or dx +=, through f32 scratch), against the CPU on the same bf16 tensors.
export const LORA_BF16_CASES = [
  { n: 37, inF: 123, outF: 77, rank: 5, bias: true },
  { n: 300, inF: 136, outF: 516, rank: 16, bias: false },
  { n: 700, inF: 1100, outF: 2100, rank: 16, bias: false },
];

export function loraBf16(r: Rng, { n, inF, outF, rank, bias }: (typeof LORA_BF16_CASES)[number]): void {
  withEnv('INSTILL_CUDA_NEXT', 'none', () => loraBf16Case(r, n, inF, outF, rank, bias));  // the verified kernels
}

function loraBf16Case(r: Rng, n: number, inF: number, outF: number, rank: number, bias: boolean): void {
  const x = pair(randn(r, n * inF), [n, inF], 'bf16');
  const w = pair(randn(r, outF * inF, 0.1), [outF, inF], 'bf16');
  const a = pair(randn(r, rank * inF, 0.1), [rank, inF]);
  const b = pair(randn(r, outF * rank, 0.1), [outF, rank]);
  const bs = bias ? pair(randn(r, outF), [outF]) : undefined;
  const scale = 2;
  const nanBf16 = (shape: number[], device: 'cpu' | 'cuda') =>
    Tensor.from(new Float32Array(shape[0] * shape[1]).fill(NaN), shape, { dtype: 'bf16' }).to(device);
  const outs = (device: 'cpu' | 'cuda') => ({ y: nanBf16([n, outF], device), u: Tensor.from(new Float32Array(n * rank).fill(NaN), [n, rank]).to(device) });
  const ref = kernels.loraLinear({ x: x.cpu, w: w.cpu, a: a.cpu, b: b.cpu, bias: bs?.cpu, scale, out: outs('cpu') });
  const got = kernels.loraLinear({ x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, bias: bs?.gpu, scale, out: outs('cuda') });
  expect(got.y.dtype).toBe('bf16');
  const mag = kernels.loraLinear({ x: abs(x.cpu), w: abs(w.cpu), a: abs(a.cpu), b: abs(b.cpu), bias: bs && abs(bs.cpu), scale });
  closeScaled(host(got.y), ref.y.toArray(), mag.y.toArray(), BF16_TOL, 'y (bf16)', got.y.shape);
  closeScaled(host(got.u), ref.u.toArray(), mag.u.toArray(), BF16_TOL, 'u', got.u.shape);
  const dy = pair(randn(r, n * outF), [n, outF], 'bf16');
  const refB = kernels.loraLinearBackward({ dy: dy.cpu, x: x.cpu, w: w.cpu, a: a.cpu, b: b.cpu, u: ref.u, scale, out: { dx: nanBf16([n, inF], 'cpu') } });
  const gotB = kernels.loraLinearBackward({ dy: dy.gpu, x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, u: ref.u.to('cuda'), scale, out: { dx: nanBf16([n, inF], 'cuda') } });
  const magB = kernels.loraLinearBackward({ dy: abs(dy.cpu), x: abs(x.cpu), w: abs(w.cpu), a: abs(a.cpu), b: abs(b.cpu), u: mag.u, scale });
  closeScaled(host(gotB.dx), refB.dx!.toArray(), magB.dx!.toArray(), BF16_TOL, 'dx (bf16)', [n, inF]);
  closeScaled(host(gotB.da), refB.da.toArray(), magB.da.toArray(), BF16_TOL, 'da', gotB.da.shape);
  closeScaled(host(gotB.db), refB.db.toArray(), magB.db.toArray(), BF16_TOL, 'db', gotB.db.shape);
  const dx0 = Tensor.from(randn(r, n * inF), [n, inF], { dtype: 'bf16' });
  const dxAcc = dx0.to('cuda');
  kernels.loraLinearBackward({ dy: dy.gpu, x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, u: ref.u.to('cuda'), scale,
    out: { dx: dxAcc }, accumulateInputGrad: true });
  closeAccumulated(host(dxAcc), refB.dx!.toArray(), magB.dx!.toArray(), dx0.toArray() as Float32Array, 'dx += (bf16)', dxAcc.shape);
}

// The residual (the model's o_proj and down_proj): by default the product, then the add (the bits of
// y + residual); INSTILL_CUDA_NEXT=residual without a bias: inside the product as cuBLASLt's C (the same sum,
// to f32 rounding: a product with beta may run another algorithm); with a bias, the add either way.
export const RESIDUAL_CASES = [
  { n: 300, inF: 136, outF: 516, rank: 16, bias: false },
  { n: 37, inF: 123, outF: 77, rank: 5, bias: true },
  { n: 2048, inF: 2048, outF: 2048, rank: 16, bias: false },  // the 1B model's o_proj
];

export function loraResidual(r: Rng, { n, inF, outF, rank, bias }: (typeof RESIDUAL_CASES)[number], which: 'verified' | 'residual'): void {
  const x = pair(randn(r, n * inF), [n, inF]);
  const w = pair(randn(r, outF * inF, 0.1), [outF, inF], 'bf16');
  const a = pair(randn(r, rank * inF, 0.1), [rank, inF]);
  const b = pair(randn(r, outF * rank, 0.1), [outF, rank]);
  const bs = bias ? pair(randn(r, outF), [outF]) : undefined;
  const res = randn(r, n * outF, 4);
  const residual = Tensor.from(res, [n, outF]).to('cuda');
  // y without the residual, under the same switch (whatever INSTILL_CUDA_NEXT the process has)
  const plain = withEnv('INSTILL_CUDA_NEXT', which === 'verified' ? 'none' : which, () =>
    host(kernels.loraLinear({ x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, bias: bs?.gpu, scale: 2 }).y));
  const mag = kernels.loraLinear({ x: abs(x.cpu), w: abs(w.cpu), a: abs(a.cpu), b: abs(b.cpu), bias: bs && abs(bs.cpu), scale: 2 }).y.toArray();
  const { value: got, parts } = withOpProfile(() => withEnv('INSTILL_CUDA_NEXT', which === 'verified' ? 'none' : which, () =>
    host(kernels.loraLinear({ x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, bias: bs?.gpu, scale: 2, residual }).y)));
  const sum = Float32Array.from(plain, (v, i) => v + res[i]);
  const inProduct = which === 'residual' && !bias;
  expect(parts).toContain(inProduct ? 'lora_linear_forward/y = residual + [x | s u] [W | B]^T' : 'lora_linear_forward/add residual');
  if (inProduct) closeScaled(got, sum, Array.from(mag, (v, i) => v + Math.abs(res[i])), 1e-5, 'y = residual + ...', [n, outF]);
  else expectBits(got, sum, 'y = residual + ... (the add after the product)', { shape: [n, outF] });
  expect(Array.from(host(residual))).toEqual(Array.from(Float32Array.from(res)));  // read, not written
}

/** How an attention result is laid out, for expectBits / close to say where it differs: (n, heads, d) or lse's (n, heads). */
export function attentionLayout(key: 'out' | 'lse' | 'dq' | 'dk' | 'dv', segs: number[], h: number, kvh: number, d: number): Layout {
  const n = segs[segs.length - 1];
  const shape = key === 'lse' ? [n, h] : [n, key === 'dk' || key === 'dv' ? kvh : h, d];
  return { shape, segs };
}

/** Causal GQA attention over packed rows in float64: out (N, H, D) and lse (N, H, natural log), every visible key
 * j of query i being seg_begin(i) <= j <= i and, with a window W > 0, i − j < W. */
export function attention64(q: Float32Array, k: Float32Array, v: Float32Array, segs: number[], H: number, KVH: number, D: number,
                     scale: number, window: number) {
  const N = segs[segs.length - 1];
  const out = new Float64Array(N * H * D), lse = new Float64Array(N * H);
  const p = new Float64Array(N), acc = new Float64Array(D);
  for (let s = 0; s + 1 < segs.length; s++) {
    for (let i = segs[s]; i < segs[s + 1]; i++) {
      const lo = window > 0 ? Math.max(segs[s], i - window + 1) : segs[s];
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / KVH));
        let m = -Infinity;
        for (let j = lo; j <= i; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[(i * H + h) * D + d] * k[(j * KVH + g) * D + d];
          p[j] = dot * scale;
          m = Math.max(m, p[j]);
        }
        let l = 0;
        acc.fill(0);
        for (let j = lo; j <= i; j++) {
          const e = Math.exp(p[j] - m);
          l += e;
          for (let d = 0; d < D; d++) acc[d] += e * v[(j * KVH + g) * D + d];
        }
        for (let d = 0; d < D; d++) out[(i * H + h) * D + d] = acc[d] / l;
        lse[i * H + h] = m + Math.log(l);
      }
    }
  }
  return { out, lse };
}

/** The gradients of attention64's attention in float64, from dout (N, H, D): with P_ij = exp(scale·q_i·k_j − lse_i),
 * dP_ij = dout_i · v_j, Δ_i = dout_i · out_i and dS = P∘(dP − Δ): dq_i = scale·Σ_j dS_ij k_j, and for key j of KV head
 * g, summed over g's query heads: dk_j = scale·Σ_i dS_ij q_i, dv_j = Σ_i P_ij dout_i. */
export function attentionBackward64(q: Float32Array, k: Float32Array, v: Float32Array, dout: Float32Array, segs: number[],
                                    H: number, KVH: number, D: number, scale: number, window: number) {
  const { out, lse } = attention64(q, k, v, segs, H, KVH, D, scale, window);
  const N = segs[segs.length - 1];
  const dq = new Float64Array(N * H * D), dk = new Float64Array(N * KVH * D), dv = new Float64Array(N * KVH * D);
  for (let s = 0; s + 1 < segs.length; s++) {
    for (let i = segs[s]; i < segs[s + 1]; i++) {
      const lo = window > 0 ? Math.max(segs[s], i - window + 1) : segs[s];
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / KVH)), qi = (i * H + h) * D;
        let delta = 0;
        for (let d = 0; d < D; d++) delta += dout[qi + d] * out[qi + d];
        for (let j = lo; j <= i; j++) {
          const kj = (j * KVH + g) * D;
          let sc = 0, dp = 0;
          for (let d = 0; d < D; d++) {
            sc += q[qi + d] * k[kj + d];
            dp += dout[qi + d] * v[kj + d];
          }
          const p = Math.exp(sc * scale - lse[i * H + h]), ds = p * (dp - delta);
          for (let d = 0; d < D; d++) {
            dq[qi + d] += scale * ds * k[kj + d];
            dk[kj + d] += scale * ds * q[qi + d];
            dv[kj + d] += p * dout[qi + d];
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}

/** Whether the kernels on Hopper's warpgroup products (the wgmma pieces) take problems on this GPU. */
export const HOPPER = runtime.info().cuda?.computeCapability === '9.0';

/** Random q, k, v, dout on both devices for packed rows with segment starts `segs` (cu_seqlens). */
export function attentionInputs(r: Rng, segs: number[], h: number, kvh: number, d: number, dtype: 'f32' | 'bf16' = 'f32') {
  const n = segs[segs.length - 1];
  return {
    q: pair(randn(r, n * h * d), [n, h, d], dtype), k: pair(randn(r, n * kvh * d), [n, kvh, d], dtype),
    v: pair(randn(r, n * kvh * d), [n, kvh, d], dtype), dout: pair(randn(r, n * h * d), [n, h, d], dtype),
    cu: pair(Int32Array.from(segs), [segs.length]), scale: 1 / Math.sqrt(d),
  };
}

/** The wgmma attention pieces' cases (test/cuda/next/*_wgmma.test.ts): segments and windows whose first visible key
 * is no multiple of 64 (their tiles start at multiples of 64 and mask the keys before), rows that end inside a tile,
 * GQA 2:1, 4:1 and 1:1, f32 inputs (bf16 copies) and bf16 activations, and D 128. */
export const WGMMA_ATTENTION_CASES = [
  { segs: [0, 13, 50, 51, 90], h: 4, kvh: 2, d: 64, window: 0, kind: 'f32' as const },
  { segs: [0, 1, 200, 333], h: 4, kvh: 1, d: 64, window: 40, kind: 'f32' as const },
  { segs: [0, 300, 701], h: 4, kvh: 2, d: 64, window: 0, kind: 'bf16' as const },
  { segs: [0, 130, 259], h: 2, kvh: 2, d: 64, window: 70, kind: 'bf16' as const },
  { segs: [0, 150, 300], h: 8, kvh: 2, d: 128, window: 0, kind: 'f32' as const },
];

/** A flash-attention case: random q, k, v, dout for packed rows `segs`, f32 or bf16 (kind 'bf16': bf16 activations),
 * on the CPU (cpu: [q, k, v, dout]) and the GPU (gpu), rounded to bf16 as the kernels read them (rounded: for float64
 * references), and where each output's elements lie (at). */
export function attentionCase(r: Rng, segs: number[], h: number, kvh: number, d: number, kind: 'f32' | 'bf16') {
  const { q, k, v, dout, cu, scale } = attentionInputs(r, segs, h, kvh, d);
  const four = [q.cpu, k.cpu, v.cpu, dout.cpu];
  const cpu = four.map((t) => (kind === 'bf16' ? Tensor.from(t.toArray() as Float32Array, t.shape, { dtype: 'bf16' }) : t));
  const n = segs[segs.length - 1];
  return {
    n, cu: cu.cpu, scale, cpu, gpu: cpu.map((t) => t.to('cuda')),
    rounded: four.map((t) => roundBf16(t.toArray() as Float32Array)),
    at: (key: 'out' | 'lse' | 'dq' | 'dk' | 'dv') => attentionLayout(key, segs, h, kvh, d),
    label: `${kind} n ${n} D ${d}`,
  };
}

type AttentionCase = ReturnType<typeof attentionCase>;

/** An attentionCase's forward on the GPU, with the kernels INSTILL_CUDA_NEXT names now: out and lse, for a backward. */
export function gpuForward(c: AttentionCase, window: number): { out: TensorHandle; lse: TensorHandle } {
  const [q, k, v] = c.gpu;
  return native().opAttention(handleOf(q), handleOf(k), handleOf(v), handleOf(c.cu), c.scale, window) as { out: TensorHandle; lse: TensorHandle };
}

/** An attentionCase's backward on the GPU on the forward outputs f, under INSTILL_CUDA_NEXT=next, with the op profile:
 * dq, dk, dv on the host. */
export function attentionBackwardUnder(c: AttentionCase, f: { out: TensorHandle; lse: TensorHandle }, window: number, next: string) {
  const [q, k, v, dout] = c.gpu;
  return withEnv('INSTILL_CUDA_NEXT', next, () => withOpProfile(() => {
    const b = native().opAttentionBackward(handleOf(dout), handleOf(q), handleOf(k), handleOf(v), f.out, f.lse, handleOf(c.cu), c.scale, window);
    return { dq: host(b.dq), dk: host(b.dk), dv: host(b.dv) };
  }));
}

/** An attentionCase's forward and backward on the CPU (its own out and lse): every output on the host. */
export function cpuAttention(c: AttentionCase, window: number) {
  const A = native();
  const [q, k, v, dout] = c.cpu;
  const f = A.opAttention(handleOf(q), handleOf(k), handleOf(v), handleOf(c.cu), c.scale, window);
  const b = A.opAttentionBackward(handleOf(dout), handleOf(q), handleOf(k), handleOf(v), f.out, f.lse, handleOf(c.cu), c.scale, window);
  return { out: host(f.out), lse: host(f.lse), dq: host(b.dq), dk: host(b.dk), dv: host(b.dv) };
}

/** Two model passes whose sums differ in order and are rounded to bf16 (an ulp here and there, then through the
 * layers below): the loss within lossTol (1e-5: a forward with the same sums), each LoRA gradient within 2e-2
 * (relative norm). With bf16 activations these small random models carry one flipped rounding into ~5e-3–1.5e-2
 * of some gradients (measured on the CPU's model: its sums reordered by another ISA, or one bf16 step in one A
 * element), so 1e-2 was the noise's own size; a wrong kernel is off by far more. Returns the worst gradient's
 * distance, for the log. */
export function expectNearPass(got: LossAndGradsResult, want: LossAndGradsResult, what: string, lossTol = 1e-5): number {
  return expectPassWithin(got, want, lossTol, 2e-2, what);
}

// bf16 activations: the pipelined flash kernels read q, k, v, dO and write out, dq, dk, dv in bf16 themselves
// (kIo16). With bf16-valued inputs the f32 path computes exactly the same (its tiles round to bf16 anyway,
// Δ sums in the same order), so each bf16 output must be the f32 path's output rounded once, bit for bit.
// D = 80 takes the f32 kernels on f32 copies: the same holds there.
export const ATTENTION_BF16_CASES = [
  { segs: [0, 13, 50, 51, 90], h: 4, kvh: 2, d: 64, window: 0, next: false },
  { segs: [0, 1, 200, 333], h: 4, kvh: 2, d: 64, window: 40, next: true },
  { segs: [0, 150, 300], h: 8, kvh: 2, d: 128, window: 0, next: false },
  { segs: [0, 2500, 4300], h: 16, kvh: 8, d: 64, window: 0, next: false },  // no split of the dK/dV heads
  { segs: [0, 2048], h: 8, kvh: 2, d: 64, window: 0, next: true },
  { segs: [0, 37, 70], h: 4, kvh: 1, d: 80, window: 0, next: false },
];

export function attentionBf16(r: Rng, { segs, h, kvh, d, window, next }: (typeof ATTENTION_BF16_CASES)[number]): void {
  const A = native();
  const n = segs[segs.length - 1];
  const bf = (len: number, shape: number[]) => Tensor.from(randn(r, len), shape, { dtype: 'bf16' }).to('cuda');
  const q = bf(n * h * d, [n, h, d]), k = bf(n * kvh * d, [n, kvh, d]), v = bf(n * kvh * d, [n, kvh, d]);
  const dout = bf(n * h * d, [n, h, d]);
  const wide = (t: Tensor) => Tensor.from(t.to('cpu').toArray() as Float32Array, t.shape).to('cuda');
  const cu = Tensor.from(Int32Array.from(segs), [segs.length], { dtype: 'i32' });
  const scale = 1 / Math.sqrt(d);
  withEnv('INSTILL_CUDA_NEXT', next ? '1' : undefined, () => {
    const f16 = A.opAttention(handleOf(q), handleOf(k), handleOf(v), handleOf(cu), scale, window);
    const f32r = A.opAttention(handleOf(wide(q)), handleOf(wide(k)), handleOf(wide(v)), handleOf(cu), scale, window);
    expect(f16.out.dtype).toBe('bf16');
    const same = (got: TensorHandle, want: TensorHandle, what: string, heads: number) => {
      const g = host(got) as Float32Array, w = roundBf16(host(want) as Float32Array);
      expect(g.every(Number.isFinite), what).toBe(true);
      expectBits(g, w, what, { shape: [n, heads, d], segs });
    };
    same(f16.out, f32r.out, 'out', h);
    expectBits(host(f16.lse), host(f32r.lse), 'lse', { shape: [n, h], segs });
    const b16 = A.opAttentionBackward(handleOf(dout), handleOf(q), handleOf(k), handleOf(v), f16.out, f16.lse, handleOf(cu), scale, window);
    const outW = Tensor.from(host(f16.out) as Float32Array, [n, h, d]).to('cuda');
    const b32 = A.opAttentionBackward(handleOf(wide(dout)), handleOf(wide(q)), handleOf(wide(k)), handleOf(wide(v)), handleOf(outW), f16.lse, handleOf(cu), scale, window);
    for (const key of ['dq', 'dk', 'dv'] as const) same(b16[key], b32[key], key, key === 'dq' ? h : kvh);
  });
}

/** rope on bf16 tensors: the f32 rotation rounded once, bit for bit (next: every piece on). */
export function ropeBf16(r: Rng, next: boolean): void {
  const A = native();
  const n = 301, h = 4, d = 64;
  const x = Tensor.from(randn(r, n * h * d), [n, h, d], { dtype: 'bf16' }).to('cuda');
  const xw = Tensor.from(x.to('cpu').toArray() as Float32Array, [n, h, d]).to('cuda');
  const pos = Tensor.from(Int32Array.from({ length: n }, (_, i) => (i * 7) % 1999), [n], { dtype: 'i32' }).to('cuda');
  const inv = Tensor.from(Float32Array.from({ length: d / 2 }, (_, i) => 500000 ** (-(2 * i) / d)), [d / 2]).to('cuda');
  withEnv('INSTILL_CUDA_NEXT', next ? '1' : undefined, () => {
    for (const backward of [false, true]) {
      const y16 = A.opRope(handleOf(x), handleOf(pos), handleOf(inv), backward);
      expect(y16.dtype).toBe('bf16');
      const y32 = roundBf16(host(A.opRope(handleOf(xw), handleOf(pos), handleOf(inv), backward)) as Float32Array);
      expectBits(host(y16), y32, `backward=${backward}`, { shape: [n, h, d] });
    }
  });
}
