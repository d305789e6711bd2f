// Tensor: a dense, row-major array owned by the native engine (CPU memory now,
// GPU memory once a GPU backend is built). Data is copied in by Tensor.from and
// out by toArray(); kernels work on tensors without copying.
import { ErrorCode, InstillError, describe } from './errors.js';
import { native, type TensorHandle } from './native.js';

export type DType = 'f32' | 'bf16' | 'f16' | 'i32';
export type Device = 'cpu' | 'cuda';

export const DTYPES: readonly DType[] = ['f32', 'bf16', 'f16', 'i32'];

export type TensorData = Float32Array | Float64Array | Int32Array | Uint16Array | readonly number[];

export interface TensorOptions {
  /** Element type. Default: 'i32' for an Int32Array, 'f32' otherwise (a Uint16Array needs 'bf16' or 'f16'). */
  dtype?: DType;
  /** 'cpu' (default) or 'cuda' (a build with the CUDA backend, on a machine with a GPU). */
  device?: Device;
}

const handles = new WeakMap<Tensor, TensorHandle>();

/** @internal The native handle of a tensor (for src/ modules that call the addon). */
export function handleOf(t: Tensor): TensorHandle {
  const h = handles.get(t);
  if (!h) throw new InstillError(ErrorCode.ARG, 'not a Tensor made by instill');
  return h;
}

export function checkShape(shape: unknown, what = 'shape'): number[] {
  if (!Array.isArray(shape)) {
    throw new InstillError(ErrorCode.SHAPE, `Expected an array of non-negative integers for ${what} but received ${describe(shape)}`);
  }
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new InstillError(
        ErrorCode.SHAPE,
        `Expected an array of non-negative integers for ${what} but element ${describe(d)} is not one`,
      );
    }
  }
  return shape as number[];
}

function checkDType(dtype: unknown): DType {
  if (typeof dtype !== 'string' || !(DTYPES as readonly string[]).includes(dtype)) {
    throw new InstillError(ErrorCode.DTYPE, `Expected one of ${DTYPES.join(', ')} for dtype but received ${describe(dtype)}`);
  }
  return dtype as DType;
}

export function checkDevice(device: unknown): Device {
  if (device === undefined || device === 'cpu') return 'cpu';
  if (device === 'cuda') {
    // Says which: a CPU-only build, or a CUDA build on a machine without a usable GPU/driver.
    const reason = native().deviceUnavailableReason('cuda');
    if (reason !== '') throw new InstillError(ErrorCode.DEVICE, `device 'cuda' is not available: ${reason}`);
    return 'cuda';
  }
  throw new InstillError(ErrorCode.DEVICE, `Expected 'cpu' or 'cuda' for device but received ${describe(device)}`);
}

export class Tensor {
  private constructor(handle: TensorHandle) {
    handles.set(this, handle);
  }

  /** @internal */
  static fromHandle(handle: TensorHandle): Tensor {
    return new Tensor(handle);
  }

  /**
   * Copies `data` into a new tensor of the given shape. Floats convert to any
   * dtype (bf16/f16 round to nearest even); i32 takes integers only. A
   * Uint16Array is taken as raw bf16 or f16 bits.
   */
  static from(data: TensorData, shape: readonly number[], options: TensorOptions = {}): Tensor {
    if (options === null || typeof options !== 'object') {
      throw new InstillError(ErrorCode.ARG, `Expected an options object but received ${describe(options)}`);
    }
    let array: Float32Array | Float64Array | Int32Array | Uint16Array;
    if (Array.isArray(data)) {
      array = Float64Array.from(data as number[]);
    } else if (
      data instanceof Float32Array ||
      data instanceof Float64Array ||
      data instanceof Int32Array ||
      data instanceof Uint16Array
    ) {
      array = data;
    } else {
      throw new InstillError(
        ErrorCode.ARG,
        `Expected a Float32Array, Float64Array, Int32Array, Uint16Array or number[] for data but received ${describe(data)}`,
      );
    }
    const dims = checkShape(shape);
    const dtype =
      options.dtype === undefined ? (array instanceof Int32Array ? 'i32' : array instanceof Uint16Array ? undefined : 'f32') : checkDType(options.dtype);
    if (dtype === undefined) {
      throw new InstillError(ErrorCode.DTYPE, "a Uint16Array holds raw bf16 or f16 bits: pass { dtype: 'bf16' } or { dtype: 'f16' }");
    }
    const device = checkDevice(options.device);
    const numel = dims.reduce((a, b) => a * b, 1);
    if (numel !== array.length) {
      throw new InstillError(
        ErrorCode.SHAPE,
        `data has ${array.length} elements but shape [${dims.join(', ')}] needs ${numel}`,
      );
    }
    const host = native().tensorFromArray(array, dims, dtype);
    if (device === 'cpu') return new Tensor(host);
    const moved = native().tensorTo(host, device);
    host.dispose();  // the staging copy's memory now, not when the event loop next turns (dispose() says why)
    return new Tensor(moved);
  }

  /** A tensor of zeros. */
  static zeros(shape: readonly number[], options: TensorOptions = {}): Tensor {
    const dims = checkShape(shape);
    const dtype = options.dtype === undefined ? 'f32' : checkDType(options.dtype);
    const device = checkDevice(options.device);
    return new Tensor(native().tensorZeros(dims, dtype, device));
  }

  get shape(): number[] {
    return handleOf(this).shape;
  }

  get dtype(): DType {
    return handleOf(this).dtype as DType;
  }

  get device(): Device {
    return handleOf(this).device as Device;
  }

  /** Number of elements. */
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Bytes of device memory held. */
  get nbytes(): number {
    return handleOf(this).nbytes;
  }

  /** This tensor on `device`: itself when already there, else a copy (synchronous). */
  to(device: Device): Tensor {
    const d = checkDevice(device);
    if (d === this.device) return this;
    return new Tensor(native().tensorTo(handleOf(this), d));
  }

  /** A copy of the data: Float32Array for f32/bf16/f16 (converted), Int32Array for i32. CPU tensors only: `.to('cpu')` first. */
  toArray(): Float32Array | Int32Array {
    return handleOf(this).toArray();
  }

  /**
   * Releases this tensor's memory now (its share: a model's weight or anything else that still uses the data
   * keeps it), instead of after garbage collection. Node frees the memory of an unreachable tensor only once the
   * event loop turns, so a long synchronous loop of kernel calls holds every tensor it made until it awaits;
   * dispose what such a loop no longer needs (the GPU's memory fills up first). Any later use of the tensor is
   * an E_ARG error; disposing twice is not. The same tensor object is the same share: `t.to(device)` on t's own
   * device and a kernel's results given as `out` are t itself, so disposing them disposes t.
   */
  dispose(): void {
    handleOf(this).dispose();
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device})`;
  }
}
