// Shared pieces of the op tests: seeded inputs, native handles, error measures.
import { expect } from 'vitest';
import { InstillError } from '../../../src/errors.js';
import { native, type NativeAddon, type TensorHandle } from '../../../src/native.js';
import { Tensor, handleOf } from '../../../src/tensor.js';
import { Rng } from '../../../src/model/model.js';

export const addon = (): NativeAddon => native();

export function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = new Rng(seed);
  return Float32Array.from({ length: n }, () => scale * r.normal());
}

export function f32(data: ArrayLike<number>, shape: number[]): TensorHandle {
  return handleOf(Tensor.from(Float32Array.from(data), shape));
}

/** A bf16 tensor of `data` (rounded to bf16), for the ops' bf16 inputs and packed buffers. */
export function bf16(data: ArrayLike<number>, shape: number[]): TensorHandle {
  return handleOf(Tensor.from(Float32Array.from(data), shape, { dtype: 'bf16' }));
}

export function i32(data: ArrayLike<number>): TensorHandle {
  return handleOf(Tensor.from(Int32Array.from(data), [data.length], { dtype: 'i32' }));
}

export function arr(h: TensorHandle): Float32Array {
  return h.toArray() as Float32Array;
}

/** The f32 bit patterns of a, for comparisons bit for bit. */
export function bits(a: Float32Array): number[] {
  return Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
}

export { relErr } from '../../helpers/compare.js';

export function errCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(InstillError);
    return `${(e as InstillError).code}: ${(e as Error).message}`;
  }
  return 'no error';
}
