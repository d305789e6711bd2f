// INSTILL_CUDA_NEXT=pdl on the GPU (native/cuda/common.cuh's launch() and pdl_enter()): on compute capability 9.0 every
// kernel on the main stream is a programmatic dependent launch, placed while the kernel ahead of it still runs and
// waiting in pdl_enter() for that kernel's writes. The arithmetic does not change, so everything must come out in the
// default's bits: a kernel that read its input before the wait would read what the kernel ahead had not yet written.
// Checked on a chain of ~660 kernels queued behind ~20 ms of products (so that the host is far ahead of the GPU and
// each kernel is launched before the one ahead of it has finished), each reading what the one before wrote, with fills
// and, with async_upload, uploads between some of them; then on the model's training steps (passes and AdamW), also
// beside side_grads (its joins are event waits on the stream). On compute capability 9.0 the launches must have been
// programmatic (native().deviceLaunchCounts); elsewhere none is, and the same checks hold trivially. A file of its own
// (test/cuda/common.ts says why); skipped where no GPU is seen.
import { describe, expect, it } from 'vitest';

import { Tensor, kernels } from '../../../src/index.js';
import type { LossAndGradsResult } from '../../../src/model/model.js';
import { native, type TensorHandle } from '../../../src/native.js';
import { handleOf } from '../../../src/tensor.js';
import { randn, rng } from '../../../bench/kernels/reference.js';
import { withEnv } from '../../helpers/env.js';
import { HOPPER, PIECE_BATCH, bits, gradBitsDiffer, hasCuda, host, pieceLoraModel, pieceModelConfig } from '../common.js';

const ROUNDS = 240;

/** 12 products of 8192³ in bf16 (~20 ms on an H100), queued first; they are given back when `done` is called. */
function busyGpu(): () => void {
  const z = Tensor.zeros([8192, 8192], { dtype: 'bf16', device: 'cuda' });
  const busy = Array.from({ length: 12 }, () => kernels.matmul({ a: z, b: z }));
  return () => {
    for (const t of busy) t.dispose();
    z.dispose();
  };
}

/** x ← u²·silu'(silu(y)·u) with y = rmsnorm(x) (rmsnorm, SwiGLU, SwiGLU's backward, each reading what the one before
 * wrote; u a fixed random (N, C), the norm's eps moving with the round, so that the state never settles: every element
 * nonzero and changing in its last bits from round to round), ROUNDS times over (N, C), queued behind busyGpu() without
 * a wait. Every 8th round instead x ← ½x², made by SwiGLU's backward from a zero gate (a fill just before it); with
 * `uploads`, the norm's weight is uploaded again then too (a small copy, staged under async_upload: it waits only for
 * the upload 16 before it), scaled by the round. C a multiple of 4: one launch an op. The last x on the host, and the
 * launches the chain made (native().deviceLaunchCounts, with whether programmatic launches were possible and why not). */
function chain(x0: Float32Array, w0: Float32Array, u0: Float32Array, n: number, c: number, uploads: boolean) {
  const A = native();
  let w = Tensor.from(w0, [c], { device: 'cuda' });
  const u = Tensor.from(u0, [n, c], { device: 'cuda' });
  let x: TensorHandle = handleOf(Tensor.from(x0, [n, c], { device: 'cuda' }));  // (uploaded first: a large copy waits)
  const done = busyGpu();
  const before = A.deviceLaunchCounts('cuda');
  for (let k = 0; k < ROUNDS; k++) {
    const old = x;
    if (k % 8 === 7) {
      if (uploads) {
        w.dispose();
        w = Tensor.from(w0.map((v) => v * (1 + k / 1000)), [c], { device: 'cuda' });
      }
      const zero = Tensor.zeros([n, c], { device: 'cuda' });
      const { dgate, dup } = A.opSwigluBackward(x, handleOf(zero), x);  // dgate = x · x · silu'(0)
      x = dgate;
      dup.dispose();
      zero.dispose();
    } else {
      const { y, rstd } = A.opRmsnorm(x, handleOf(w), 1e-5 * (1 + (k % 8)));
      const s = A.opSwiglu(y, handleOf(u));
      const { dgate, dup } = A.opSwigluBackward(handleOf(u), s, handleOf(u));  // dgate = u · u · silu'(s)
      x = dgate;
      for (const t of [y, rstd, s, dup]) t.dispose();  // (their blocks go to the next rounds' outputs)
    }
    old.dispose();
  }
  const after = A.deviceLaunchCounts('cuda');
  const out = host(x) as Float32Array;
  x.dispose();
  w.dispose();
  u.dispose();
  done();
  return { out, launches: after.launches - before.launches, programmatic: after.programmatic - before.programmatic, pdl: after.pdl };
}

/** The chain with and without the piece (beside `also`, pieces on in both): the same bits, a lively output, and on
 * compute capability 9.0 every launch programmatic but those right after a fill (none without the piece, none
 * elsewhere). */
function expectChainBits(also: string, uploads: boolean): void {
  const r = rng(31);
  const n = 2047, c = 1032;  // (row kernels of 2047 blocks: more than an H100 holds at once)
  const x0 = randn(r, n * c, 2), w0 = randn(r, c), u0 = randn(r, n * c);
  const plain = withEnv('INSTILL_CUDA_NEXT', `default${also}`, () => chain(x0, w0, u0, n, c, uploads));
  const got = withEnv('INSTILL_CUDA_NEXT', `default${also},pdl`, () => chain(x0, w0, u0, n, c, uploads));
  expect(plain.out.every(Number.isFinite), 'the chain stays finite').toBe(true);
  const nonzero = plain.out.reduce((k, v) => k + (v !== 0 ? 1 : 0), 0) / plain.out.length;
  expect(nonzero, 'the share of the chain\'s output that is not zero (a chain that died out would prove nothing)').toBeGreaterThan(0.9);
  let differ = 0;
  for (let i = 0; i < got.out.length; i++) if (!Object.is(got.out[i], plain.out[i])) differ++;
  expect(differ, 'elements of the chain\'s output that differ in bits from the default\'s').toBe(0);
  const fills = ROUNDS / 8, kernelsRun = 3 * (ROUNDS - fills) + fills;  // (rmsnorm, SwiGLU, its backward; a fill round 1)
  expect(plain.programmatic, 'programmatic launches without the piece').toBe(0);
  expect(got.launches, 'kernels the chain launched').toBeGreaterThanOrEqual(kernelsRun);
  if (HOPPER) {
    expect(got.pdl, 'whether programmatic launches could be made').toBe('on');
    // every launch but the one right after each fill, and the first (after busyGpu's fill, the products are cuBLASLt's)
    expect(got.programmatic, `programmatic launches with the piece (of ${got.launches})`).toBeGreaterThanOrEqual(got.launches - fills - 1);
  } else {
    expect(got.programmatic, `programmatic launches with the piece, not on compute capability 9.0 (${got.pdl})`).toBe(0);
  }
}

/** Three training steps (passes and AdamW, clipped) of the pieces' model under `next`: each step's result, and the
 * adapter after them. */
async function steps(next: string) {
  const m = pieceLoraModel(pieceModelConfig(208, 560), 31, (i) => 0.01 * Math.sin(i + 1));
  const out: LossAndGradsResult[] = [];
  for (let k = 0; k < 3; k++) {
    out.push(await withEnv('INSTILL_CUDA_NEXT', next, () => m.lossAndGrads(PIECE_BATCH)));
    withEnv('INSTILL_CUDA_NEXT', next, () => m.adamwStep({ lr: 1e-3, maxGradNorm: 1 }));
  }
  const adapter = m.adapterWeights();
  m.dispose();
  return { out, adapter };
}

async function expectStepBits(also: string): Promise<void> {
  const plain = await steps(`default${also}`);
  const got = await steps(`default${also},pdl`);
  for (let k = 0; k < 3; k++) {
    // (the loss's rows are summed by atomics in double, in whatever order they finish: the same to 1e-12, not in bits)
    expect(Math.abs(got.out[k].loss - plain.out[k].loss) / plain.out[k].loss, `step ${k + 1}: loss`).toBeLessThan(1e-12);
    expect(gradBitsDiffer(got.out[k], plain.out[k]), `step ${k + 1}: LoRA gradient elements that differ in bits`).toBe(0);
  }
  for (const name of Object.keys(plain.adapter)) {
    expect(bits(got.adapter[name]).equals(bits(plain.adapter[name])), `the adapter after 3 steps: ${name}`).toBe(true);
  }
}

describe.skipIf(!hasCuda)('INSTILL_CUDA_NEXT=pdl', () => {
  it(`a chain of dependent kernels queued far ahead, fills between some, gives the default's bits${HOPPER ? '' : ' (not compute capability 9.0: nothing launched differently)'}`,
    () => expectChainBits('', false), 120_000);

  it('the same chain with small uploads between some kernels, staged without a wait (with async_upload)',
    () => expectChainBits(',async_upload', true), 120_000);

  it('three training steps (passes and AdamW) give the default\'s gradients and adapter in bits', () => expectStepBits(''));

  it('the same beside side_grads (LoRA\'s dA and dB on the side stream, joined by event waits)', () => expectStepBits(',side_grads'));
});
