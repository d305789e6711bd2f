// Bad calls, as a new user would make them: each must throw an InstillError
// with the right code and a message that names what to fix, and the process
// must live on (a crash would take this test worker down with it).
import { describe, expect, it } from 'vitest';

import { InstillError, Tensor, kernels, runtime } from '../../src/index.js';
import { native } from '../../src/native.js';

const f32 = (shape: number[]) => Tensor.from(new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.5), shape);
const i32 = (values: number[]) => Tensor.from(new Int32Array(values), [values.length]);

const x = f32([4, 6]);
const w = f32([5, 6]);
const a = f32([2, 6]);
const b = f32([5, 2]);
const { u } = kernels.loraLinear({ x, w, a, b, scale: 1 });
const dy = f32([4, 5]);
const logits = f32([3, 7]);
const h = f32([3, 6]);
const head = f32([7, 6]);

type Case = [string, () => unknown, string, RegExp];

const cases: Case[] = [
  ['no options at all', () => (kernels.loraLinear as (o?: unknown) => unknown)(), 'E_ARG', /options object/],
  ['missing x', () => kernels.loraLinear({ w, a, b, scale: 1 } as never), 'E_ARG', /x/],
  ['a typed array instead of a Tensor', () => kernels.loraLinear({ x: new Float32Array(24) as never, w, a, b, scale: 1 }), 'E_ARG', /Tensor for x/],
  ['1-D x', () => kernels.loraLinear({ x: f32([24]), w, a, b, scale: 1 }), 'E_SHAPE', /'x'/],
  ['w with the wrong in-features', () => kernels.loraLinear({ x, w: f32([5, 7]), a, b, scale: 1 }), 'E_SHAPE', /'w' must have shape \(5, 6\)/],
  ['b transposed by mistake', () => kernels.loraLinear({ x, w, a, b: f32([2, 5]), scale: 1 }), 'E_SHAPE', /'b' must have shape \(5, 2\)/],
  ['bias of the wrong length', () => kernels.loraLinear({ x, w, a, b, bias: f32([6]), scale: 1 }), 'E_SHAPE', /'bias'/],
  ['NaN scale', () => kernels.loraLinear({ x, w, a, b, scale: NaN }), 'E_ARG', /scale/],
  ['scale as a string', () => kernels.loraLinear({ x, w, a, b, scale: '2' as never }), 'E_ARG', /scale/],
  ['integer x', () => kernels.loraLinear({ x: Tensor.from(new Int32Array(24), [4, 6]), w, a, b, scale: 1 }), 'E_DTYPE', /'x' must be f32/],
  ['bf16 adapter', () => kernels.loraLinear({ x, w, a: Tensor.from(new Float32Array(12), [2, 6], { dtype: 'bf16' }), b, scale: 1 }), 'E_DTYPE', /'a' must be f32/],
  ['dy of the wrong shape', () => kernels.loraLinearBackward({ dy: f32([4, 6]), x, w, a, b, u, scale: 1 }), 'E_SHAPE', /'dy'/],
  ['u from another layer', () => kernels.loraLinearBackward({ dy, x, w, a, b, u: f32([4, 3]), scale: 1 }), 'E_SHAPE', /'u'/],
  ['float targets', () => kernels.maskedCrossEntropy({ logits, targets: f32([3]) }), 'E_DTYPE', /'targets' must be i32/],
  ['a target equal to V', () => kernels.maskedCrossEntropy({ logits, targets: i32([0, 7, 1]) }), 'E_RANGE', /targets\[1\] = 7 is outside the vocabulary \[0, 7\)/],
  ['a negative target that is not the ignore index', () => kernels.maskedCrossEntropy({ logits, targets: i32([0, -5, 1]) }), 'E_RANGE', /-5/],
  ['too few targets', () => kernels.maskedCrossEntropy({ logits, targets: i32([0, 1]) }), 'E_SHAPE', /one target per row/],
  ['fractional ignoreIndex', () => kernels.maskedCrossEntropy({ logits, targets: i32([0, 1, 2]), ignoreIndex: 1.5 }), 'E_ARG', /ignoreIndex/],
  ['negative normalizer', () => kernels.maskedCrossEntropy({ logits, targets: i32([0, 1, 2]), normalizer: -3 }), 'E_ARG', /normalizer/],
  ['head of the wrong width', () => kernels.linearCrossEntropy({ h, w: f32([7, 5]), targets: i32([0, 1, 2]) }), 'E_SHAPE', /'w' must have shape \(7, 6\)/],
  ['target beyond the head', () => kernels.linearCrossEntropy({ h, w: head, targets: i32([0, 1, 99]) }), 'E_RANGE', /99/],
  ["needWeightGrad: 'yes'", () => kernels.linearCrossEntropy({ h, w: head, targets: i32([0, 1, 2]), needWeightGrad: 'yes' as never }), 'E_ARG', /needWeightGrad/],
  ['negative chunkRows', () => kernels.linearCrossEntropy({ h, w: head, targets: i32([0, 1, 2]), chunkRows: -1 }), 'E_ARG', /chunkRows/],
  ['matmul with mismatched inner dimensions', () => kernels.matmul({ a: x, b: w }), 'E_SHAPE', /inner dimensions/],
  ['matmul into an out of the wrong shape', () => kernels.matmul({ a: x, b: w, transB: true, out: f32([4, 4]) }), 'E_SHAPE', /'out' must have shape \(4, 5\)/],
  ['matmul into an integer out', () => kernels.matmul({ a: x, b: w, transB: true, out: Tensor.from(new Int32Array(20), [4, 5]) }), 'E_DTYPE', /'out' must be f32/],
  ['an absurd tensor', () => Tensor.zeros([1 << 30, 1 << 30]), 'E_ALLOC', /memory/],
  ['an output too large for the machine', () => kernels.loraLinear({
    x: f32([1_000_000, 1]), w: f32([1_000_000, 1]), a: f32([1, 1]), b: f32([1_000_000, 1]), scale: 1,
  }), 'E_ALLOC', /memory/],
  ['zero threads', () => runtime.setThreads(0), 'E_ARG', /threads/],
  ['an unknown ISA', () => runtime.setIsa('sse9'), 'E_ARG', /portable, avx2/],
  ['the raw addon with numbers for tensors', () => (native().loraLinear as (...a: unknown[]) => unknown)(1, 2, 3, 4, 5, 6), 'E_ARG', /'x' must be a Tensor/],
  ['the raw addon with too few arguments', () => (native().maskedCrossEntropy as (...a: unknown[]) => unknown)(), 'E_ARG', /expects 5 arguments/],
];

describe('bad calls throw coded InstillErrors and the process lives on', () => {
  it.each(cases)('%s', (_name, call, code, message) => {
    let caught: unknown;
    try {
      call();
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(InstillError);
    const err = caught as InstillError;
    expect(err.code).toBe(code);
    expect(err.message).toMatch(message);
  });

  it('still computes correctly after all of them', () => {
    const r = kernels.maskedCrossEntropy({ logits, targets: i32([0, -100, 6]) });
    expect(r.count).toBe(2);
    expect(r.loss).toBeCloseTo(Math.log(7), 6);
  });
});
