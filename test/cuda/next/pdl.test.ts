// INSTILL_CUDA_NEXT=pdl on the GPU (native/cuda/common.cuh's launch() and pdl_enter()): on compute capability 9.0 every
// kernel on the main stream is a programmatic dependent launch, placed while the kernel ahead of it still runs and
// waiting in pdl_enter() for that kernel's writes. The arithmetic does not change, so everything must come out in the
// default's bits: a kernel that read its input before the wait would read what the kernel ahead had not yet written.
// Checked on a chain of ~1,000 kernels of several waves each, every one reading what the one before wrote, with
// uploads and fills between some of them; then on the model's training steps (the passes and AdamW). Elsewhere than
// on compute capability 9.0 the piece launches nothing differently, and the same checks hold trivially. A file of its
// own (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { Tensor } from '../../../src/index.js';
import type { LossAndGradsResult } from '../../../src/model/model.js';
import { native, type TensorHandle } from '../../../src/native.js';
import { handleOf } from '../../../src/tensor.js';
import { randn, rng } from '../../../bench/kernels/reference.js';
import { withEnv } from '../../helpers/env.js';
import { HOPPER, PIECE_BATCH, bits, gradBitsDiffer, hasCuda, host, pieceLoraModel, pieceModelConfig } from '../common.js';

const ON = 'default,pdl';

/** rmsnorm → SwiGLU → SwiGLU's backward → a row gather (the embedding lookup), `rounds` times over (N, C), each op
 * reading what the one before wrote: x ← rows of silu(y)²·y, y = rmsnorm(x). Every 8th round the gather's ids are
 * uploaded again (a copy between two kernels) and x ← rows of ½x², made by SwiGLU's backward from a zero gate (a fill
 * just before it). On `device`; the last x on the host. Each op's inputs are given back as soon as it is queued, so
 * the next ones write into the same blocks (the allocator's stream order, under the piece too). */
function pdlChain(device: 'cpu' | 'cuda', x0: Float32Array, w0: Float32Array, n: number, c: number, rounds: number): Float32Array {
  const A = native();
  const w = handleOf(Tensor.from(w0, [c], { device }));
  let x: TensorHandle = handleOf(Tensor.from(x0, [n, c], { device }));
  const rows = (k: number) => handleOf(Tensor.from(Int32Array.from({ length: n }, (_, i) => (i * 7 + k) % n), [n], { dtype: 'i32', device }));
  let ids = rows(0);
  const next = (t: TensorHandle, ...done: TensorHandle[]) => {
    for (const d of done) d.dispose();
    return t;
  };
  for (let k = 0; k < rounds; k++) {
    if (k % 8 === 7) {
      ids = next(rows(k), ids);
      const zero = handleOf(Tensor.zeros([n, c], { device }));
      const { dgate, dup } = A.opSwigluBackward(x, zero, x);  // dgate = x · x · silu'(0)
      x = next(A.opEmbedding(ids, dgate), x, zero, dgate, dup);
      continue;
    }
    const { y, rstd } = A.opRmsnorm(x, w, 1e-5);
    const s = A.opSwiglu(y, y);
    const { dgate, dup } = A.opSwigluBackward(s, y, y);  // dup = silu(y) · y · silu(y)
    x = next(A.opEmbedding(ids, dup), x, y, rstd, s, dgate, dup);  // every row read by another block than wrote it
  }
  const out = host(x) as Float32Array;
  x.dispose();
  return out;
}

/** Finite, and not near zero (the chain neither blows up nor dies out, so equal bits say something). */
function expectLively(out: Float32Array): void {
  expect(out.every(Number.isFinite), 'the chain stays finite').toBe(true);
  const rms = Math.sqrt(out.reduce((a, v) => a + v * v, 0) / out.length);
  expect(rms, 'the chain\'s output rms').toBeGreaterThan(0.05);
}

it('the chain the GPU check runs is lively: on the CPU, finite and far from zero after 240 rounds', () => {
  const r = rng(31);
  const n = 257, c = 130;
  expectLively(pdlChain('cpu', randn(r, n * c, 2), randn(r, c), n, c, 240));
});

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=pdl', () => {
  it(`a chain of ~1,000 dependent kernels (with uploads and fills) gives the default's bits${HOPPER ? '' : ' (not compute capability 9.0: nothing launched differently)'}`, () => {
    const r = rng(31);
    const n = 2047, c = 1030;  // (row kernels of 2047 blocks: more than an H100 holds at once)
    const x0 = randn(r, n * c, 2), w0 = randn(r, c);
    const plain = withEnv('INSTILL_CUDA_NEXT', 'default', () => pdlChain('cuda', x0, w0, n, c, 240));
    const got = withEnv('INSTILL_CUDA_NEXT', ON, () => pdlChain('cuda', x0, w0, n, c, 240));
    expectLively(plain);
    let differ = 0;
    for (let i = 0; i < got.length; i++) if (!Object.is(got[i], plain[i])) differ++;
    expect(differ, 'elements of the chain\'s output that differ in bits from the default\'s').toBe(0);
  }, 120_000);

  it('three training steps (passes and AdamW) give the default\'s losses, gradients and adapter in bits', async () => {
    const make = () => pieceLoraModel(pieceModelConfig(208, 560), 31, (i) => 0.01 * Math.sin(i + 1));
    const steps = async (next: string) => {
      const m = make();
      const out: LossAndGradsResult[] = [];
      for (let k = 0; k < 3; k++) {
        out.push(await withEnv('INSTILL_CUDA_NEXT', next, () => m.lossAndGrads(PIECE_BATCH)));
        withEnv('INSTILL_CUDA_NEXT', next, () => m.adamwStep({ lr: 1e-3, maxGradNorm: 1 }));
      }
      const adapter = m.adapterWeights();
      m.dispose();
      return { out, adapter };
    };
    const plain = await steps('default');
    const got = await steps(ON);
    for (let k = 0; k < 3; k++) {
      expect(got.out[k].loss, `step ${k + 1}: loss`).toBe(plain.out[k].loss);
      expect(gradBitsDiffer(got.out[k], plain.out[k]), `step ${k + 1}: LoRA gradient elements that differ in bits`).toBe(0);
    }
    for (const name of Object.keys(plain.adapter)) {
      expect(bits(got.adapter[name]).equals(bits(plain.adapter[name])), `the adapter after 3 steps: ${name}`).toBe(true);
    }
  });
});
