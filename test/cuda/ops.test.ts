// Every CUDA op against the CPU backend on the same random inputs (awkward
// sizes, poisoned outputs), run only where runtime.info().devices has 'cuda'
// (a build with INSTILL_CUDA=on on a machine with a GPU: bench/gpu-check.sh).
// Elsewhere the whole file is skipped with the reason.
//
// Tolerances: ops whose CUDA kernels are f32 arithmetic (rmsnorm, rope, swiglu,
// adamw, embedding, masked CE, attention decode, attention at head dims the
// tensor-core path does not take or with INSTILL_CUDA_ATTENTION=simple) 1e-4 of
// the output's largest value; ops on the tensor cores (matmul, lora_linear,
// linear CE, attention at D 64 / 128) round operands to bf16: 2e-2.
import { describe, expect, it } from 'vitest';

import { Tensor, kernels, runtime } from '../../src/index.js';
import { native, type TensorHandle } from '../../src/native.js';
import { handleOf } from '../../src/tensor.js';
import { randn, rng, roundBf16, seed } from '../../bench/kernels/reference.js';
import { poisonAndRestoreIsa } from '../helpers/kernels.js';
import { relErr } from '../helpers/compare.js';
import { withEnv } from '../helpers/env.js';
import { withOpProfile } from '../helpers/profile.js';

const hasCuda = runtime.info().devices.includes('cuda');
if (!hasCuda) console.warn(`skipping test/cuda: ${native().deviceUnavailableReason('cuda')}`);

const F32_TOL = 1e-4;
const BF16_TOL = 2e-2;

const host = (t: Tensor | TensorHandle | null | undefined): Float32Array | Int32Array => {
  if (!t) throw new Error('missing tensor');
  return t instanceof Tensor ? t.to('cpu').toArray() : native().tensorTo(t, 'cpu').toArray();
};

/** The same data as a CPU tensor and a CUDA tensor. */
function pair(data: Float32Array | Int32Array, shape: number[], dtype: 'f32' | 'bf16' | 'i32' = data instanceof Int32Array ? 'i32' : 'f32') {
  const cpu = Tensor.from(data, shape, { dtype });
  return { cpu, gpu: cpu.to('cuda') };
}

function close(got: ArrayLike<number>, ref: ArrayLike<number>, tol: number, what: string): void {
  const e = relErr(got, ref);
  expect(e, `${what}: relative error ${e} (seed ${seed})`).toBeLessThan(tol);
}

/**
 * max |got − ref| / max |mag|, where mag is the same product on the inputs' absolute values: the scale of a
 * sum's rounding error when its terms cancel (a 1×1 LoRA output x·w + s·u·b near 0 made `close` flaky).
 */
function closeScaled(got: ArrayLike<number>, ref: ArrayLike<number>, mag: ArrayLike<number>, tol: number, what: string): void {
  let d = 0, m = 0;
  for (let i = 0; i < ref.length; i++) {
    d = Math.max(d, Math.abs(got[i] - ref[i]));
    m = Math.max(m, Math.abs(mag[i]));
  }
  const e = m === 0 ? d : d / m;
  expect(e, `${what}: error ${e} of the terms' magnitude (seed ${seed})`).toBeLessThan(tol);
}

/** closeScaled for an output added into a tensor that held `init`: ref + init, at the magnitude mag + |init|. */
function closeAccumulated(got: ArrayLike<number>, ref: ArrayLike<number>, mag: ArrayLike<number>, init: Float32Array, what: string): void {
  closeScaled(got, Array.from(ref, (v, i) => v + init[i]), Array.from(mag, (v, i) => v + Math.abs(init[i])), BF16_TOL, what);
}

const abs = (t: Tensor): Tensor => Tensor.from((t.toArray() as Float32Array).map(Math.abs), t.shape, { dtype: t.dtype as 'f32' | 'bf16' });

describe.skipIf(!hasCuda)('CUDA backend vs CPU backend', () => {
  poisonAndRestoreIsa();
  const r = rng(seed);

  it('tensors move to the GPU and back unchanged (f32, bf16, i32); zeros', () => {
    const x = randn(r, 1000);
    for (const dtype of ['f32', 'bf16'] as const) {
      const t = Tensor.from(x, [10, 100], { dtype });
      const g = t.to('cuda');
      expect(g.device).toBe('cuda');
      expect(g.shape).toEqual([10, 100]);
      expect(g.to('cuda')).toBe(g);
      expect(Array.from(g.to('cpu').toArray())).toEqual(Array.from(t.toArray()));
    }
    const ids = Int32Array.from({ length: 77 }, (_, i) => i * 7 - 100);
    expect(Array.from(Tensor.from(ids, [77], { device: 'cuda' }).to('cpu').toArray())).toEqual(Array.from(ids));
    expect(Array.from(Tensor.zeros([3, 5], { device: 'cuda' }).to('cpu').toArray())).toEqual(new Array(15).fill(0));
  });

  it('errors: toArray on a GPU tensor, mixed devices, out-of-range targets and ids', () => {
    const g = Tensor.from(new Float32Array(6), [2, 3], { device: 'cuda' });
    expect(() => g.toArray()).toThrow(expect.objectContaining({ code: 'E_DEVICE' }));
    const c = Tensor.from(new Float32Array(12), [3, 4]);
    expect(() => kernels.matmul({ a: g, b: c })).toThrow(expect.objectContaining({ code: 'E_DEVICE' }));
    const logits = Tensor.from(randn(r, 4 * 9), [4, 9], { device: 'cuda' });
    const bad = Tensor.from(Int32Array.from([1, 9, -100, 2]), [4], { device: 'cuda' });
    expect(() => kernels.maskedCrossEntropy({ logits, targets: bad })).toThrow(expect.objectContaining({ code: 'E_RANGE' }));
    const w = Tensor.from(randn(r, 9 * 5), [9, 5], { device: 'cuda' });
    expect(() => native().opEmbedding(handleOf(bad), handleOf(w))).toThrow(expect.objectContaining({ code: 'E_RANGE' }));
  });

  it.each([
    { m: 37, k: 123, n: 77, ta: false, tb: false },
    { m: 37, k: 123, n: 77, ta: true, tb: false },
    { m: 130, k: 5, n: 65, ta: false, tb: true },
    { m: 1, k: 1, n: 1, ta: true, tb: true },
    { m: 257, k: 300, n: 129, ta: false, tb: true },
  ])('matmul $m×$k×$n transA=$ta transB=$tb (b f32 and bf16)', ({ m, k, n, ta, tb }) => {
    const a = pair(randn(r, m * k), ta ? [k, m] : [m, k]);
    for (const dt of ['f32', 'bf16'] as const) {
      const b = pair(randn(r, k * n), tb ? [n, k] : [k, n], dt);
      const ref = kernels.matmul({ a: a.cpu, b: b.cpu, transA: ta, transB: tb });
      const got = kernels.matmul({ a: a.gpu, b: b.gpu, transA: ta, transB: tb });
      expect(got.device).toBe('cuda');
      close(host(got), ref.toArray(), BF16_TOL, `matmul ${dt}`);
    }
  });

  it.each([
    { n: 37, inF: 123, outF: 77, rank: 5, bias: true },
    { n: 1, inF: 1, outF: 1, rank: 1, bias: false },
    { n: 300, inF: 130, outF: 515, rank: 16, bias: false },
    // widths that are multiples of 4 (the packs' vector path) and of 8 (W copied 16 bytes a thread), rank > 32
    { n: 45, inF: 1028, outF: 200, rank: 5, bias: false },
    { n: 203, inF: 136, outF: 516, rank: 16, bias: true },
    { n: 61, inF: 260, outF: 36, rank: 37, bias: false },
    // K and N long enough that the narrow kernels split them over CTAs (their partial sums added in order)
    { n: 700, inF: 1100, outF: 2100, rank: 16, bias: false },
  ].flatMap((c) => [{ ...c, kernels: 'verified' }, { ...c, kernels: 'narrow' }, { ...c, kernels: 'pack_wb' }]))(
    'loraLinear forward + backward N=$n $inF→$outF r=$rank bias=$bias (w bf16, kernels: $kernels)', ({ n, inF, outF, rank, bias, kernels: which }) => {
    // INSTILL_CUDA_NEXT=narrow: u, g, dA, dB on lora_narrow.cu's kernels; =pack_wb: [W | B] in one pass (read per call)
    // the profile's parts show which kernels ran
    const { parts } = withOpProfile(() => withEnv('INSTILL_CUDA_NEXT', which === 'verified' ? undefined : which, () => loraCase(n, inF, outF, rank, bias)));
    const narrow = ['lora_linear_forward/pack x, u = x A^T, pack s u (simt)', 'lora_linear_backward/pack dy, g = dy B, pack s g (simt)',
      'lora_linear_backward/dA = s g^T x (simt)', 'lora_linear_backward/dB = s dy^T u (simt)'];
    for (const part of narrow) {
      if (which === 'narrow') expect(parts).toContain(part);
      else expect(parts).not.toContain(part);
    }
    if (which === 'pack_wb') expect(parts).toContain('lora_linear_forward/pack [W | B] (one pass)');
    else expect(parts).not.toContain('lora_linear_forward/pack [W | B] (one pass)');
  });

  function loraCase(n: number, inF: number, outF: number, rank: number, bias: boolean): void {
    const x = pair(randn(r, n * inF), [n, inF]);
    const w = pair(randn(r, outF * inF, 0.1), [outF, inF], 'bf16');
    const a = pair(randn(r, rank * inF, 0.1), [rank, inF]);
    const b = pair(randn(r, outF * rank, 0.1), [outF, rank]);
    const bs = bias ? pair(randn(r, outF), [outF]) : undefined;
    const scale = 2;
    const ref = kernels.loraLinear({ x: x.cpu, w: w.cpu, a: a.cpu, b: b.cpu, bias: bs?.cpu, scale });
    const got = kernels.loraLinear({ x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, bias: bs?.gpu, scale });
    const mag = kernels.loraLinear({ x: abs(x.cpu), w: abs(w.cpu), a: abs(a.cpu), b: abs(b.cpu), bias: bs && abs(bs.cpu), scale });
    closeScaled(host(got.y), ref.y.toArray(), mag.y.toArray(), BF16_TOL, 'y');
    closeScaled(host(got.u), ref.u.toArray(), mag.u.toArray(), BF16_TOL, 'u');
    const dy = pair(randn(r, n * outF), [n, outF]);
    const refB = kernels.loraLinearBackward({ dy: dy.cpu, x: x.cpu, w: w.cpu, a: a.cpu, b: b.cpu, u: ref.u, scale });
    const gotB = kernels.loraLinearBackward({ dy: dy.gpu, x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, u: ref.u.to('cuda'), scale });
    const magB = kernels.loraLinearBackward({ dy: abs(dy.cpu), x: abs(x.cpu), w: abs(w.cpu), a: abs(a.cpu), b: abs(b.cpu), u: mag.u, scale });
    closeScaled(host(gotB.dx), refB.dx!.toArray(), magB.dx!.toArray(), BF16_TOL, 'dx');
    closeScaled(host(gotB.da), refB.da.toArray(), magB.da.toArray(), BF16_TOL, 'da');
    closeScaled(host(gotB.db), refB.db.toArray(), magB.db.toArray(), BF16_TOL, 'db');
    // accumulateInputGrad: dx added into a given tensor (the model sums q, k, v's input gradients so)
    const dx0 = randn(r, n * inF);
    const dxAcc = Tensor.from(dx0, [n, inF]).to('cuda');
    kernels.loraLinearBackward({ dy: dy.gpu, x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, u: ref.u.to('cuda'), scale,
      out: { dx: dxAcc }, accumulateInputGrad: true });
    closeAccumulated(host(dxAcc), refB.dx!.toArray(), magB.dx!.toArray(), dx0, 'dx +=');
    // accumulate: dA and dB added into given tensors
    const da0 = randn(r, rank * inF), db0 = randn(r, outF * rank);
    const daAcc = Tensor.from(da0, [rank, inF]).to('cuda'), dbAcc = Tensor.from(db0, [outF, rank]).to('cuda');
    kernels.loraLinearBackward({ dy: dy.gpu, x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, u: ref.u.to('cuda'), scale,
      out: { da: daAcc, db: dbAcc }, accumulate: true, needInputGrad: false });
    closeAccumulated(host(daAcc), refB.da.toArray(), magB.da.toArray(), da0, 'da +=');
    closeAccumulated(host(dbAcc), refB.db.toArray(), magB.db.toArray(), db0, 'db +=');
  }

  // bf16 activations (the model's MLP on a GPU): x and dy bf16 in, y and dx bf16 out (the product's bf16 D;
  // with a bias, or dx +=, through f32 scratch), against the CPU on the same bf16 tensors.
  it.each([
    { n: 37, inF: 123, outF: 77, rank: 5, bias: true },
    { n: 300, inF: 136, outF: 516, rank: 16, bias: false },
    { n: 700, inF: 1100, outF: 2100, rank: 16, bias: false },
  ].flatMap((c) => [{ ...c, narrow: 'verified' }, { ...c, narrow: 'narrow' }, { ...c, narrow: 'bf16_beta' }]))('loraLinear with bf16 x, y, dy, dx N=$n $inF→$outF r=$rank bias=$bias (kernels: $narrow)', ({ n, inF, outF, rank, bias, narrow }) => {
    // INSTILL_CUDA_NEXT=narrow: u and g from the bf16 x / dy copied into the packs (lora_narrow.cu reading bf16), dA on the bf16 x;
    // =bf16_beta: dx += into the bf16 dx by cuBLASLt itself (no f32 copy of dx)
    const { parts } = withOpProfile(() => withEnv('INSTILL_CUDA_NEXT', narrow === 'verified' ? undefined : narrow, () => loraBf16Case(n, inF, outF, rank, bias)));
    for (const part of ['lora_linear_forward/u = x A^T, pack s u (simt)', 'lora_linear_backward/g = dy B, pack s g (simt)',
      'lora_linear_backward/dA = s g^T x (simt)']) {
      if (narrow === 'narrow') expect(parts).toContain(part);
      else expect(parts).not.toContain(part);
    }
  });

  // The residual (the model's o_proj and down_proj): by default the product, then the add (the bits of
  // y + residual); INSTILL_CUDA_NEXT=residual without a bias: inside the product as cuBLASLt's C (the same sum,
  // to f32 rounding: a product with beta may run another algorithm); with a bias, the add either way.
  it.each([
    { n: 300, inF: 136, outF: 516, rank: 16, bias: false },
    { n: 37, inF: 123, outF: 77, rank: 5, bias: true },
    { n: 2048, inF: 2048, outF: 2048, rank: 16, bias: false },  // the 1B model's o_proj
  ].flatMap((c) => [{ ...c, kernels: 'verified' }, { ...c, kernels: 'residual' }]))('loraLinear with a residual N=$n $inF→$outF r=$rank bias=$bias (kernels: $kernels)', ({ n, inF, outF, rank, bias, kernels: which }) => {
    const x = pair(randn(r, n * inF), [n, inF]);
    const w = pair(randn(r, outF * inF, 0.1), [outF, inF], 'bf16');
    const a = pair(randn(r, rank * inF, 0.1), [rank, inF]);
    const b = pair(randn(r, outF * rank, 0.1), [outF, rank]);
    const bs = bias ? pair(randn(r, outF), [outF]) : undefined;
    const res = randn(r, n * outF, 4);
    const residual = Tensor.from(res, [n, outF]).to('cuda');
    const plain = host(kernels.loraLinear({ x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, bias: bs?.gpu, scale: 2 }).y);
    const mag = kernels.loraLinear({ x: abs(x.cpu), w: abs(w.cpu), a: abs(a.cpu), b: abs(b.cpu), bias: bs && abs(bs.cpu), scale: 2 }).y.toArray();
    const { value: got, parts } = withOpProfile(() => withEnv('INSTILL_CUDA_NEXT', which === 'verified' ? undefined : which, () =>
      host(kernels.loraLinear({ x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, bias: bs?.gpu, scale: 2, residual }).y)));
    const sum = Float32Array.from(plain, (v, i) => v + res[i]);
    const inProduct = which === 'residual' && !bias;
    expect(parts).toContain(inProduct ? 'lora_linear_forward/y = residual + [x | s u] [W | B]^T' : 'lora_linear_forward/add residual');
    if (inProduct) closeScaled(got, sum, Array.from(mag, (v, i) => v + Math.abs(res[i])), 1e-5, 'y = residual + ...');
    else expect(Buffer.from(Float32Array.from(got).buffer).equals(Buffer.from(sum.buffer))).toBe(true);
    expect(Array.from(host(residual))).toEqual(Array.from(Float32Array.from(res)));  // read, not written
  });

  function loraBf16Case(n: number, inF: number, outF: number, rank: number, bias: boolean): void {
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
    closeScaled(host(got.y), ref.y.toArray(), mag.y.toArray(), BF16_TOL, 'y (bf16)');
    closeScaled(host(got.u), ref.u.toArray(), mag.u.toArray(), BF16_TOL, 'u');
    const dy = pair(randn(r, n * outF), [n, outF], 'bf16');
    const refB = kernels.loraLinearBackward({ dy: dy.cpu, x: x.cpu, w: w.cpu, a: a.cpu, b: b.cpu, u: ref.u, scale, out: { dx: nanBf16([n, inF], 'cpu') } });
    const gotB = kernels.loraLinearBackward({ dy: dy.gpu, x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, u: ref.u.to('cuda'), scale, out: { dx: nanBf16([n, inF], 'cuda') } });
    const magB = kernels.loraLinearBackward({ dy: abs(dy.cpu), x: abs(x.cpu), w: abs(w.cpu), a: abs(a.cpu), b: abs(b.cpu), u: mag.u, scale });
    closeScaled(host(gotB.dx), refB.dx!.toArray(), magB.dx!.toArray(), BF16_TOL, 'dx (bf16)');
    closeScaled(host(gotB.da), refB.da.toArray(), magB.da.toArray(), BF16_TOL, 'da');
    closeScaled(host(gotB.db), refB.db.toArray(), magB.db.toArray(), BF16_TOL, 'db');
    const dx0 = Tensor.from(randn(r, n * inF), [n, inF], { dtype: 'bf16' });
    const dxAcc = dx0.to('cuda');
    kernels.loraLinearBackward({ dy: dy.gpu, x: x.gpu, w: w.gpu, a: a.gpu, b: b.gpu, u: ref.u.to('cuda'), scale,
      out: { dx: dxAcc }, accumulateInputGrad: true });
    closeAccumulated(host(dxAcc), refB.dx!.toArray(), magB.dx!.toArray(), dx0.toArray() as Float32Array, 'dx += (bf16)');
  }

  it('maskedCrossEntropy: loss and dlogits, ignored rows, logits of magnitude 1e4, all ignored', () => {
    const n = 37, v = 1001;
    const logits = randn(r, n * v, 5);
    logits[3 * v + 7] = 1e4;
    const t = Int32Array.from({ length: n }, (_, i) => (i % 4 === 1 ? -100 : Math.floor(r() * v)));
    const L = pair(logits, [n, v]), T = pair(t, [n]);
    const ref = kernels.maskedCrossEntropy({ logits: L.cpu, targets: T.cpu });
    const got = kernels.maskedCrossEntropy({ logits: L.gpu, targets: T.gpu });
    expect(got.count).toBe(ref.count);
    expect(Math.abs(got.loss - ref.loss) / Math.abs(ref.loss)).toBeLessThan(1e-5);
    close(host(got.dlogits), ref.dlogits!.toArray(), F32_TOL, 'dlogits');
    const none = pair(new Int32Array(n).fill(-100), [n]);
    const z = kernels.maskedCrossEntropy({ logits: L.gpu, targets: none.gpu });
    expect(z.loss).toBe(0);
    expect(z.count).toBe(0);
    expect(Math.max(...Array.from(host(z.dlogits)).map(Math.abs))).toBe(0);
  });

  it.each([{ chunkRows: 7 }, { chunkRows: 0 }])('linearCrossEntropy (w bf16, dW too, chunkRows $chunkRows)', ({ chunkRows }) => {
    const n = 45, c = 67, v = 1003;
    const h = pair(randn(r, n * c), [n, c]);
    const w = pair(randn(r, v * c, 0.2), [v, c], 'bf16');
    const t = Int32Array.from({ length: n }, (_, i) => (i % 3 === 0 ? -100 : Math.floor(r() * v)));
    const T = pair(t, [n]);
    const ref = kernels.linearCrossEntropy({ h: h.cpu, w: w.cpu, targets: T.cpu, needWeightGrad: true, normalizer: 50 });
    const got = kernels.linearCrossEntropy({ h: h.gpu, w: w.gpu, targets: T.gpu, needWeightGrad: true, normalizer: 50, chunkRows });
    expect(got.count).toBe(ref.count);
    expect(Math.abs(got.loss - ref.loss) / Math.abs(ref.loss)).toBeLessThan(BF16_TOL);
    close(host(got.dh), ref.dh!.toArray(), BF16_TOL, 'dh');
    close(host(got.dw), ref.dw!.toArray(), BF16_TOL, 'dw');
  });

  it('embedding forward + backward (bf16 table, repeated ids)', () => {
    const n = 53, c = 37, v = 19;
    const ids = pair(Int32Array.from({ length: n }, () => Math.floor(r() * v)), [n]);
    const w = pair(randn(r, v * c), [v, c], 'bf16');
    const A = native();
    close(host(A.opEmbedding(handleOf(ids.gpu), handleOf(w.gpu))), A.opEmbedding(handleOf(ids.cpu), handleOf(w.cpu)).toArray(), F32_TOL, 'out');
    const dout = pair(randn(r, n * c), [n, c]);
    close(host(A.opEmbeddingBackward(handleOf(dout.gpu), handleOf(ids.gpu), v)),
      A.opEmbeddingBackward(handleOf(dout.cpu), handleOf(ids.cpu), v).toArray(), F32_TOL, 'dw');
  });

  it.each([{ n: 37, c: 123 }, { n: 3, c: 4099 }, { n: 29, c: 2052 }])('rmsnorm forward + backward $n×$c', ({ n, c }) => {
    const A = native();
    const x = pair(randn(r, n * c, 3), [n, c]), w = pair(randn(r, c), [c]), dy = pair(randn(r, n * c), [n, c]);
    const ref = A.opRmsnorm(handleOf(x.cpu), handleOf(w.cpu), 1e-5), got = A.opRmsnorm(handleOf(x.gpu), handleOf(w.gpu), 1e-5);
    close(host(got.y), ref.y.toArray(), F32_TOL, 'y');
    close(host(got.rstd), ref.rstd.toArray(), F32_TOL, 'rstd');
    const refB = A.opRmsnormBackward(handleOf(dy.cpu), handleOf(x.cpu), handleOf(w.cpu), ref.rstd);
    const gotB = A.opRmsnormBackward(handleOf(dy.gpu), handleOf(x.gpu), handleOf(w.gpu), got.rstd);
    close(host(gotB.dx), refB.dx.toArray(), F32_TOL, 'dx');
    close(host(gotB.dw), refB.dw.toArray(), F32_TOL, 'dw');
    // a bf16 y (bf16 activations): the f32 y rounded once, so within one bf16 step of the CPU's bf16 y, and
    // the GPU's own f32 y rounded (c = 4099 and 123 take the scalar kernel, 2052 the vector one)
    const got16 = A.opRmsnorm(handleOf(x.gpu), handleOf(w.gpu), 1e-5, 'bf16');
    expect(got16.y.dtype).toBe('bf16');
    close(host(got16.y), A.opRmsnorm(handleOf(x.cpu), handleOf(w.cpu), 1e-5, 'bf16').y.toArray(), 8e-3, 'y (bf16)');
    const own = roundBf16(host(got.y) as Float32Array);
    expect(Buffer.from((host(got16.y) as Float32Array).buffer).equals(Buffer.from(own.buffer)), 'y (bf16) = y rounded').toBe(true);
  });

  it('rope forward + backward (positions restarting per example, large positions)', () => {
    const A = native();
    const n = 29, h = 3, d = 10;
    const x = pair(randn(r, n * h * d), [n, h, d]);
    const pos = pair(Int32Array.from({ length: n }, (_, i) => (i < 11 ? i : i < 20 ? i - 11 : 5000 + i)), [n]);
    const inv = pair(Float32Array.from({ length: d / 2 }, (_, i) => 10000 ** (-(2 * i) / d)), [d / 2]);
    for (const backward of [false, true]) {
      close(host(A.opRope(handleOf(x.gpu), handleOf(pos.gpu), handleOf(inv.gpu), backward)),
        A.opRope(handleOf(x.cpu), handleOf(pos.cpu), handleOf(inv.cpu), backward).toArray(), F32_TOL, `rope backward=${backward}`);
    }
  });

  it.each([
    { n: 29, h: 3, d: 10 },
    { n: 2048, h: 32, d: 64 },  // the 1B model's q
    { n: 300, h: 5, d: 256 },   // half = 128, the per-token kernel's largest
  ])('rope with cos, sin once per token (INSTILL_CUDA_NEXT=rope_token): the verified kernel\'s bits, n $n H $h D $d', ({ n, h, d }) => {
    const A = native();
    const x = pair(randn(r, n * h * d), [n, h, d]);
    const pos = pair(Int32Array.from({ length: n }, (_, i) => (i < n / 2 ? i : 3 * i + 1000)), [n]);
    const inv = pair(Float32Array.from({ length: d / 2 }, (_, i) => 500000 ** (-(2 * i) / d)), [d / 2]);
    for (const backward of [false, true]) {
      const run = (next: boolean) => withEnv('INSTILL_CUDA_NEXT', next ? 'rope_token' : undefined, () => {
        const { value: out, parts } = withOpProfile(() => host(A.opRope(handleOf(x.gpu), handleOf(pos.gpu), handleOf(inv.gpu), backward)));
        return { out, parts };
      });
      const verified = run(false), next = run(true);
      const part = `${backward ? 'rope_backward' : 'rope_forward'}/cos, sin once per token (next)`;
      expect(verified.parts).not.toContain(part);
      expect(next.parts).toContain(part);
      expect(Buffer.from(next.out.buffer).equals(Buffer.from(verified.out.buffer)), `backward=${backward}`).toBe(true);
    }
  });

  it('INSTILL_CUDA_NEXT picks kernels one by one: all, -name leaves one out, an unknown name is E_ARG', () => {
    const A = native();
    const x = Tensor.from(randn(r, 7 * 2 * 8), [7, 2, 8]).to('cuda');
    const pos = Tensor.from(Int32Array.from({ length: 7 }, (_, i) => i), [7], { dtype: 'i32' }).to('cuda');
    const inv = Tensor.from(Float32Array.from({ length: 4 }, (_, i) => 10000 ** (-(2 * i) / 8)), [4]).to('cuda');
    const ranPerToken = (value: string) => withEnv('INSTILL_CUDA_NEXT', value, () =>
      withOpProfile(() => A.opRope(handleOf(x), handleOf(pos), handleOf(inv), false)).parts.includes('rope_forward/cos, sin once per token (next)'));
    expect(ranPerToken('all')).toBe(true);
    expect(ranPerToken('narrow,rope_token')).toBe(true);
    expect(ranPerToken('all,-rope_token')).toBe(false);
    expect(ranPerToken('narrow')).toBe(false);
    expect(() => ranPerToken('narow')).toThrow(expect.objectContaining({ code: 'E_ARG', message: expect.stringContaining("'narow'") }));
  });

  it('swiglu forward + backward (gates up to ±100)', () => {
    const A = native();
    const n = 31, f = 77;
    const g = pair(randn(r, n * f, 100), [n, f]), u = pair(randn(r, n * f), [n, f]), d = pair(randn(r, n * f), [n, f]);
    close(host(A.opSwiglu(handleOf(g.gpu), handleOf(u.gpu))), A.opSwiglu(handleOf(g.cpu), handleOf(u.cpu)).toArray(), F32_TOL, 'out');
    const refB = A.opSwigluBackward(handleOf(d.cpu), handleOf(g.cpu), handleOf(u.cpu));
    const gotB = A.opSwigluBackward(handleOf(d.gpu), handleOf(g.gpu), handleOf(u.gpu));
    close(host(gotB.dgate), refB.dgate.toArray(), F32_TOL, 'dgate');
    close(host(gotB.dup), refB.dup.toArray(), F32_TOL, 'dup');
    // every tensor bf16 (the model's MLP on a GPU): f32 math, each output rounded once, so the two backends
    // differ by at most one bf16 step of an element (2^-8 of the largest), and the vector kernel (8 a
    // thread) and the scalar tail both run (31 x 77 is not a multiple of 8)
    const g16 = pair(randn(r, n * f, 10), [n, f], 'bf16'), u16 = pair(randn(r, n * f), [n, f], 'bf16'), d16 = pair(randn(r, n * f), [n, f], 'bf16');
    const out16 = A.opSwiglu(handleOf(g16.gpu), handleOf(u16.gpu));
    expect(out16.dtype).toBe('bf16');
    close(host(out16), A.opSwiglu(handleOf(g16.cpu), handleOf(u16.cpu)).toArray(), 8e-3, 'out (bf16)');
    const refB16 = A.opSwigluBackward(handleOf(d16.cpu), handleOf(g16.cpu), handleOf(u16.cpu));
    const gotB16 = A.opSwigluBackward(handleOf(d16.gpu), handleOf(g16.gpu), handleOf(u16.gpu));
    close(host(gotB16.dgate), refB16.dgate.toArray(), 8e-3, 'dgate (bf16)');
    close(host(gotB16.dup), refB16.dup.toArray(), 8e-3, 'dup (bf16)');
  });

  it('adamw: three steps with weight decay, the third with a gradient scale (clipping)', () => {
    const A = native();
    const n = 70001;  // three of the kernel's 32768-element chunks, the last partial
    const p = pair(randn(r, n), [n]), m = pair(new Float32Array(n), [n]), v = pair(new Float32Array(n), [n]);
    for (let t = 1; t <= 3; t++) {
      const g = pair(randn(r, n), [n]);
      for (const s of [{ p: p.cpu, g: g.cpu, m: m.cpu, v: v.cpu }, { p: p.gpu, g: g.gpu, m: m.gpu, v: v.gpu }]) {
        A.opAdamw(handleOf(s.p), handleOf(s.g), handleOf(s.m), handleOf(s.v), 1e-2, 0.9, 0.95, 1e-8, 0.1, t, t === 3 ? 0.3 : 1);
      }
    }
    close(host(p.gpu), p.cpu.toArray(), 1e-6, 'param');
    close(host(m.gpu), m.cpu.toArray(), 1e-6, 'm');
    close(host(v.gpu), v.cpu.toArray(), 1e-6, 'v');
  });

  it('sum_squares: several tensors over several chunks, deterministic', () => {
    const A = native();
    const sizes = [70001, 0, 131077, 37];
    const ts = sizes.map((n) => pair(randn(r, n), [n]));
    const cpu = A.opSumSquares(ts.map((t) => handleOf(t.cpu)));
    const gpu = A.opSumSquares(ts.map((t) => handleOf(t.gpu)));
    expect(Math.abs(gpu - cpu) / cpu).toBeLessThan(1e-12);
    expect(A.opSumSquares(ts.map((t) => handleOf(t.gpu)))).toBe(gpu);
  });

  /** Random q, k, v, dout on both devices for packed rows with segment starts `segs` (cu_seqlens). */
  function attentionInputs(segs: number[], h: number, kvh: number, d: number) {
    const n = segs[segs.length - 1];
    return {
      q: pair(randn(r, n * h * d), [n, h, d]), k: pair(randn(r, n * kvh * d), [n, kvh, d]),
      v: pair(randn(r, n * kvh * d), [n, kvh, d]), dout: pair(randn(r, n * h * d), [n, h, d]),
      cu: pair(Int32Array.from(segs), [segs.length]), scale: 1 / Math.sqrt(d),
    };
  }

  it.each([
    { segs: [0, 13, 50, 51, 90], h: 4, kvh: 2, d: 64, window: 0 },
    { segs: [0, 70], h: 6, kvh: 1, d: 37, window: 0 },
    { segs: [0, 33, 99], h: 2, kvh: 2, d: 128, window: 5 },
    { segs: [0, 1, 200, 333], h: 4, kvh: 2, d: 64, window: 40 },
    { segs: [0, 150, 300], h: 8, kvh: 2, d: 128, window: 0 },
  ])('attention forward + backward: packed $segs, H=$h KVH=$kvh D=$d window=$window', ({ segs, h, kvh, d, window }) => {
    const A = native();
    const { q, k, v, dout, cu, scale } = attentionInputs(segs, h, kvh, d);
    const ref = A.opAttention(handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), handleOf(cu.cpu), scale, window);
    const got = A.opAttention(handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), handleOf(cu.gpu), scale, window);
    // D 64 / 128 run on the tensor cores (bf16 operands) unless INSTILL_CUDA_ATTENTION=simple
    const tol = (d === 64 || d === 128) && process.env.INSTILL_CUDA_ATTENTION !== 'simple' ? BF16_TOL : F32_TOL;
    close(host(got.out), ref.out.toArray(), tol, 'out');
    close(host(got.lse), ref.lse.toArray(), tol, 'lse');
    const refB = A.opAttentionBackward(handleOf(dout.cpu), handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), ref.out, ref.lse, handleOf(cu.cpu), scale, window);
    const gotB = A.opAttentionBackward(handleOf(dout.gpu), handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), got.out, got.lse, handleOf(cu.gpu), scale, window);
    close(host(gotB.dq), refB.dq.toArray(), tol, 'dq');
    close(host(gotB.dk), refB.dk.toArray(), tol, 'dk');
    close(host(gotB.dv), refB.dv.toArray(), tol, 'dv');
    // cu_seqlens may stay on the host (as the model passes it): the same bits
    const hostCu = A.opAttention(handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), handleOf(cu.cpu), scale, window);
    expect(Array.from(host(hostCu.out))).toEqual(Array.from(host(got.out)));
  });

  it.each([
    { segs: [0, 13, 50, 51, 90], h: 4, kvh: 2, d: 64, window: 0, cpu: true },
    { segs: [0, 1, 200, 333], h: 4, kvh: 2, d: 64, window: 40, cpu: true },
    { segs: [0, 97, 611], h: 2, kvh: 2, d: 128, window: 0, cpu: true },
    { segs: [0, 150, 300], h: 8, kvh: 2, d: 128, window: 7, cpu: true },
    // 68 key blocks × 8 KV heads: the dK/dV kernel loops over both query heads of a group (no split)
    { segs: [0, 2500, 4300], h: 16, kvh: 8, d: 64, window: 0, cpu: false },
  ])('flash attention, synchronous / pipelined (cp.async tiles) / default (mixed): the same bits, $segs H=$h KVH=$kvh D=$d window=$window', ({ segs, h, kvh, d, window, cpu }) => {
    const A = native();
    const { q, k, v, dout, cu, scale } = attentionInputs(segs, h, kvh, d);
    const run = (mode: string | undefined) => withEnv('INSTILL_CUDA_ATTENTION', mode, () => {  // read on every call
      const f = A.opAttention(handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), handleOf(cu.cpu), scale, window);
      const b = A.opAttentionBackward(handleOf(dout.gpu), handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), f.out, f.lse, handleOf(cu.cpu), scale, window);
      return { out: host(f.out), lse: host(f.lse), dq: host(b.dq), dk: host(b.dk), dv: host(b.dv) };
    });
    // Each path's op-profile parts show which kernels ran (the pipelined ones make bf16 copies).
    const profiled = (mode: string | undefined) => {
      const { value: got, parts } = withOpProfile(() => run(mode));
      return { got, parts };
    };
    const flash = profiled('flash'), piped = profiled('pipelined'), dflt = profiled(undefined);
    const fwdCopies = 'attention_forward/bf16 copies of k, v', bwdCopies = 'attention_backward/bf16 copies of q, k, v, dO';
    expect(flash.parts).not.toContain(fwdCopies);
    expect(flash.parts).not.toContain(bwdCopies);
    expect(piped.parts).toContain(fwdCopies);
    expect(piped.parts).toContain(bwdCopies);
    expect(dflt.parts).not.toContain(fwdCopies);  // the default: forward synchronous, backward pipelined
    expect(dflt.parts).toContain(bwdCopies);
    for (const key of ['out', 'lse', 'dq', 'dk', 'dv'] as const) {
      expect(piped.got[key].every((x) => Number.isFinite(x)), key).toBe(true);
      expect(Buffer.from(piped.got[key].buffer).equals(Buffer.from(flash.got[key].buffer)), key).toBe(true);
      expect(Buffer.from(dflt.got[key].buffer).equals(Buffer.from(flash.got[key].buffer)), key).toBe(true);
    }
    if (!cpu) return;
    const ref = A.opAttention(handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), handleOf(cu.cpu), scale, window);
    const refB = A.opAttentionBackward(handleOf(dout.cpu), handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), ref.out, ref.lse, handleOf(cu.cpu), scale, window);
    close(piped.got.out, ref.out.toArray(), BF16_TOL, 'out');
    close(piped.got.dq, refB.dq.toArray(), BF16_TOL, 'dq');
    close(piped.got.dk, refB.dk.toArray(), BF16_TOL, 'dk');
    close(piped.got.dv, refB.dv.toArray(), BF16_TOL, 'dv');
  });

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
    const { q, k, v, dout, cu, scale } = attentionInputs(segs, h, kvh, d);
    const fwd = A.opAttention(handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), handleOf(cu.cpu), scale, window);
    const run = (next: boolean, mode?: string) => withEnv('INSTILL_CUDA_NEXT', next ? 'flash_mt,attn_prep' : undefined, () => withEnv('INSTILL_CUDA_ATTENTION', mode, () => {
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
    const bits = (a: Float32Array | Int32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
    for (const key of ['out', 'lse', 'dq', 'dk', 'dv'] as const) {
      expect(next[key].every((x) => Number.isFinite(x)), key).toBe(true);
      expect(bits(nextPiped[key]).equals(bits(next[key])), `${key}: pipelined and synchronous loads`).toBe(true);
      if (same || key === 'dk' || key === 'dv') expect(bits(next[key]).equals(bits(verified[key])), `${key}: the verified kernels' bits`).toBe(true);
    }
    const ref = A.opAttention(handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), handleOf(cu.cpu), scale, window);
    close(next.out, ref.out.toArray(), BF16_TOL, 'out');
    close(next.lse, ref.lse.toArray(), BF16_TOL, 'lse');
    const refB = A.opAttentionBackward(handleOf(dout.cpu), handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), ref.out, ref.lse, handleOf(cu.cpu), scale, window);
    close(next.dq, refB.dq.toArray(), BF16_TOL, 'dq');
  });

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
    const { q, k, v, dout, cu, scale } = attentionInputs(segs, h, kvh, d);
    const dev = (t: { cpu: Tensor }) => (kind === 'bf16' ? Tensor.from(t.cpu.toArray() as Float32Array, t.cpu.shape, { dtype: 'bf16' }).to('cuda') : t.cpu.to('cuda'));
    const [qg, kg, vg, dg] = [dev(q), dev(k), dev(v), dev(dout)];
    const run = (occ: boolean, mode?: string) => withEnv('INSTILL_CUDA_NEXT', occ ? 'flash_occ' : undefined, () => withEnv('INSTILL_CUDA_ATTENTION', mode, () => {
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
        expect(diff / mag, `${key} (mode ${mode ?? 'default'})`).toBeLessThanOrEqual(1e-5);
        if (Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))) bitsSame.push(key);
      }
      console.log(`flash_occ ${kind} n ${n} mode ${mode ?? 'default'}: the verified kernels' bits for ${bitsSame.join(', ') || 'none'}`);
    }
  });

  // bf16 activations: the pipelined flash kernels read q, k, v, dO and write out, dq, dk, dv in bf16 themselves
  // (kIo16). With bf16-valued inputs the f32 path computes exactly the same (its tiles round to bf16 anyway,
  // Δ sums in the same order), so each bf16 output must be the f32 path's output rounded once, bit for bit.
  // D = 80 takes the f32 kernels on f32 copies: the same holds there.
  it.each([
    { segs: [0, 13, 50, 51, 90], h: 4, kvh: 2, d: 64, window: 0, next: false },
    { segs: [0, 1, 200, 333], h: 4, kvh: 2, d: 64, window: 40, next: true },
    { segs: [0, 150, 300], h: 8, kvh: 2, d: 128, window: 0, next: false },
    { segs: [0, 2500, 4300], h: 16, kvh: 8, d: 64, window: 0, next: false },  // no split of the dK/dV heads
    { segs: [0, 2048], h: 8, kvh: 2, d: 64, window: 0, next: true },
    { segs: [0, 37, 70], h: 4, kvh: 1, d: 80, window: 0, next: false },
  ])('attention on bf16 tensors: the f32 path\'s outputs rounded once, $segs H=$h KVH=$kvh D=$d window=$window next=$next', ({ segs, h, kvh, d, window, next }) => {
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
      const same = (got: TensorHandle, want: TensorHandle, what: string) => {
        const g = host(got) as Float32Array, w = roundBf16(host(want) as Float32Array);
        expect(g.every(Number.isFinite), what).toBe(true);
        expect(Buffer.from(g.buffer).equals(Buffer.from(w.buffer)), what).toBe(true);
      };
      same(f16.out, f32r.out, 'out');
      expect(Buffer.from((host(f16.lse) as Float32Array).buffer).equals(Buffer.from((host(f32r.lse) as Float32Array).buffer))).toBe(true);
      const b16 = A.opAttentionBackward(handleOf(dout), handleOf(q), handleOf(k), handleOf(v), f16.out, f16.lse, handleOf(cu), scale, window);
      const outW = Tensor.from(host(f16.out) as Float32Array, [n, h, d]).to('cuda');
      const b32 = A.opAttentionBackward(handleOf(wide(dout)), handleOf(wide(q)), handleOf(wide(k)), handleOf(wide(v)), handleOf(outW), f16.lse, handleOf(cu), scale, window);
      for (const key of ['dq', 'dk', 'dv'] as const) same(b16[key], b32[key], key);
    });
  });

  it.each([false, true])('rope on bf16 tensors (next=%s): the f32 rotation rounded once, bit for bit', (next) => {
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
        expect(Buffer.from((host(y16) as Float32Array).buffer).equals(Buffer.from(y32.buffer)), `backward=${backward}`).toBe(true);
      }
    });
  });

  it.each([
    { start: 37, n: 5, h: 4, kvh: 2, d: 80, window: 0 },
    { start: 0, n: 23, h: 3, kvh: 1, d: 64, window: 0 },
    { start: 50, n: 1, h: 8, kvh: 2, d: 128, window: 16 },
  ])('attention decode against a KV cache: start $start, n $n, H=$h KVH=$kvh D=$d window $window', ({ start, n, h, kvh, d, window }) => {
    const A = native();
    const tmax = start + n + 3;
    const q = pair(randn(r, n * h * d), [n, h, d]), k = pair(randn(r, n * kvh * d), [n, kvh, d]), v = pair(randn(r, n * kvh * d), [n, kvh, d]);
    const kc = pair(randn(r, tmax * kvh * d), [tmax, kvh, d]), vc = pair(randn(r, tmax * kvh * d), [tmax, kvh, d]);
    const scale = 1 / Math.sqrt(d);
    const ref = A.opAttentionDecode(handleOf(q.cpu), handleOf(k.cpu), handleOf(v.cpu), handleOf(kc.cpu), handleOf(vc.cpu), start, scale, window);
    const got = A.opAttentionDecode(handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), handleOf(kc.gpu), handleOf(vc.gpu), start, scale, window);
    close(host(got), ref.toArray(), F32_TOL, 'out');
    // the new rows landed in the caches, the rest is untouched: compare the whole caches
    expect(Array.from(host(kc.gpu))).toEqual(Array.from(kc.cpu.toArray()));
    expect(Array.from(host(vc.gpu))).toEqual(Array.from(vc.cpu.toArray()));
    expect(() => A.opAttentionDecode(handleOf(q.gpu), handleOf(k.gpu), handleOf(v.gpu), handleOf(kc.gpu), handleOf(vc.gpu), tmax - n + 1, scale, window))
      .toThrow(expect.objectContaining({ code: 'E_RANGE' }));
  });

  it('attention with head dimension > 128 is E_UNSUPPORTED, not a crash', () => {
    const A = native();
    const q = Tensor.from(randn(r, 4 * 256), [4, 1, 256], { device: 'cuda' });
    const cu = Tensor.from(Int32Array.from([0, 4]), [2], { device: 'cuda' });
    expect(() => A.opAttention(handleOf(q), handleOf(q), handleOf(q), handleOf(cu), 0.1)).toThrow(expect.objectContaining({ code: 'E_UNSUPPORTED' }));
  });
});
