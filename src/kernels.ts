// kernels.*: every fused op callable on its own, for people who benchmark and
// test kernels. Each call validates its options here (messages name the option
// and say what was received), the native side re-checks shapes, dtypes and
// target ranges, and both throw InstillError with a code.
//
// Kernels run synchronously (the calling thread plus the engine's thread pool):
// a kernel call is a building block for timing, and a Promise per call would
// only add latency to what is being measured. Whole training steps run off the
// JS thread (the model layer).
import { ErrorCode, InstillError, describe } from './errors.js';
import { native } from './native.js';
import { Tensor, handleOf } from './tensor.js';
import type { TensorHandle } from './native.js';

function options(value: unknown, fn: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new InstillError(ErrorCode.ARG, `kernels.${fn} expects an options object but received ${describe(value)}`);
  }
  return value as Record<string, unknown>;
}

function tensor(opts: Record<string, unknown>, name: string, fn: string): TensorHandle {
  const v = opts[name];
  if (!(v instanceof Tensor)) {
    throw new InstillError(
      ErrorCode.ARG,
      `kernels.${fn}: expected a Tensor for ${name} but received ${describe(v)} (make one with Tensor.from)`,
    );
  }
  return handleOf(v);
}

function optionalTensor(opts: Record<string, unknown>, name: string, fn: string): TensorHandle | null {
  return opts[name] === undefined || opts[name] === null ? null : tensor(opts, name, fn);
}

/** opts.out[name] as a tensor handle, or null; opts.out must be an object when given. */
function outTensor(opts: Record<string, unknown>, name: string, fn: string): TensorHandle | null {
  const out = opts.out;
  if (out === undefined || out === null) return null;
  if (typeof out !== 'object') throw new InstillError(ErrorCode.ARG, `kernels.${fn}: expected an object of output tensors for out but received ${describe(out)}`);
  return optionalTensor(out as Record<string, unknown>, name, fn);
}

function finite(opts: Record<string, unknown>, name: string, fn: string, fallback?: number): number {
  const v = opts[name] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new InstillError(ErrorCode.ARG, `kernels.${fn}: expected a finite number for ${name} but received ${describe(opts[name])}`);
  }
  return v;
}

function int32(opts: Record<string, unknown>, name: string, fn: string, fallback: number): number {
  const v = opts[name] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < -(2 ** 31) || v >= 2 ** 31) {
    throw new InstillError(ErrorCode.ARG, `kernels.${fn}: expected a 32-bit integer for ${name} but received ${describe(opts[name])}`);
  }
  return v;
}

function bool(opts: Record<string, unknown>, name: string, fn: string, fallback: boolean): boolean {
  const v = opts[name] ?? fallback;
  if (typeof v !== 'boolean') {
    throw new InstillError(ErrorCode.ARG, `kernels.${fn}: expected a boolean for ${name} but received ${describe(opts[name])}`);
  }
  return v;
}

function normalizer(opts: Record<string, unknown>, fn: string): number {
  if (opts.normalizer === undefined) return 0;
  const v = finite(opts, 'normalizer', fn);
  if (v <= 0) {
    throw new InstillError(ErrorCode.ARG, `kernels.${fn}: expected a positive number for normalizer but received ${describe(v)}`);
  }
  return v;
}

function chunkRows(opts: Record<string, unknown>, fn: string): number {
  const v = opts.chunkRows ?? 0;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new InstillError(ErrorCode.ARG, `kernels.${fn}: expected a non-negative integer for chunkRows but received ${describe(opts.chunkRows)}`);
  }
  return v;
}

const wrap = (h: TensorHandle): Tensor => Tensor.fromHandle(h);
const wrapOrNull = (h: TensorHandle | null): Tensor | null => (h ? Tensor.fromHandle(h) : null);

export interface MatmulOptions {
  /** (M, K), or (K, M) with transA. f32, bf16 or f16. */
  a: Tensor;
  /** (K, N), or (N, K) with transB. f32, bf16 or f16. */
  b: Tensor;
  transA?: boolean;
  transB?: boolean;
  /** Write the result into this f32 (M, N) tensor (on a's device) instead of a new one; it is returned. */
  out?: Tensor;
}

export interface LoraLinearOptions {
  /** (N, in) f32 */
  x: Tensor;
  /** (out, in) f32, bf16 or f16: the frozen weight */
  w: Tensor;
  /** (out) f32 */
  bias?: Tensor | null;
  /** (r, in) f32: lora_A */
  a: Tensor;
  /** (out, r) f32: lora_B */
  b: Tensor;
  /** alpha / r (rsLoRA: alpha / sqrt(r)) */
  scale: number;
  /** Write into these f32 tensors ((N, out) and (N, r), on x's device, not sharing memory with an input) instead of new ones. */
  out?: { y?: Tensor; u?: Tensor };
  /**
   * (N, out) f32, not out.y itself: added to y (y = residual + x·wᵀ + …), so a layer's output joins a residual
   * stream in the same call (on a GPU inside the product where it can). y is then f32.
   */
  residual?: Tensor | null;
}

export interface LoraLinearBackwardOptions {
  /** (N, out) f32: gradient of y */
  dy: Tensor;
  x: Tensor;
  w: Tensor;
  a: Tensor;
  b: Tensor;
  /** (N, r): the u returned by loraLinear */
  u: Tensor;
  scale: number;
  /** Compute dx (default true). */
  needInputGrad?: boolean;
  /** Write into these f32 tensors instead of new ones (not sharing memory with an input). */
  out?: { dx?: Tensor; da?: Tensor; db?: Tensor };
  /** Add the gradients into out.da and out.db (+=, gradient accumulation) instead of overwriting them. Default false. */
  accumulate?: boolean;
  /** Add dx into out.dx (+=: layers that share an input, such as q, k and v) instead of overwriting it. Default false. */
  accumulateInputGrad?: boolean;
}

export interface MaskedCrossEntropyOptions {
  /** (N, V) f32 */
  logits: Tensor;
  /** (N) i32: class per row, or ignoreIndex */
  targets: Tensor;
  ignoreIndex?: number;
  /** Divide by this instead of the count of non-ignored rows (gradient accumulation). */
  normalizer?: number;
  /** Compute dlogits (default true). */
  needGrad?: boolean;
}

export interface LinearCrossEntropyOptions {
  /** (N, C) f32: final hidden states */
  h: Tensor;
  /** (V, C) f32, bf16 or f16: the LM head */
  w: Tensor;
  /** (N) i32 */
  targets: Tensor;
  ignoreIndex?: number;
  normalizer?: number;
  /** Compute dh (default true). */
  needInputGrad?: boolean;
  /** Compute dw (default false: the head is frozen under LoRA). */
  needWeightGrad?: boolean;
  /**
   * Rows per chunk. Default: on the CPU as many as fit in 32 MiB of logits (peak extra memory about
   * chunkRows·V·4 bytes); on CUDA sized by the backend (f32 logits in sub-chunks of ≤ 256 MiB, the softmax
   * gradient of a chunk in ≤ 1 GiB: about chunkRows·V·6 bytes with a bf16 head, ·8 with an f32 one).
   */
  chunkRows?: number;
}

export interface CrossEntropyResult {
  /** Mean loss over rows whose target is not ignoreIndex (0 when there are none). */
  loss: number;
  /** Number of such rows. */
  count: number;
}

export const kernels = {
  /** C = op(A)·op(B) in f32 (bf16/f16 operands are converted, accumulation is f32). */
  matmul(opts: MatmulOptions): Tensor {
    const o = options(opts, 'matmul');
    const out = optionalTensor(o, 'out', 'matmul');
    const c = native().matmul(
      tensor(o, 'a', 'matmul'),
      tensor(o, 'b', 'matmul'),
      bool(o, 'transA', 'matmul', false),
      bool(o, 'transB', 'matmul', false),
      out,
    );
    return out ? (o.out as Tensor) : wrap(c);
  },

  /** u = x·aᵀ; y = x·wᵀ + bias + scale·u·bᵀ (+ residual), the low-rank term fused into y's output tile. */
  loraLinear(opts: LoraLinearOptions): { y: Tensor; u: Tensor } {
    const fn = 'loraLinear';
    const o = options(opts, fn);
    const r = native().loraLinear(
      tensor(o, 'x', fn),
      tensor(o, 'w', fn),
      optionalTensor(o, 'bias', fn),
      tensor(o, 'a', fn),
      tensor(o, 'b', fn),
      finite(o, 'scale', fn),
      outTensor(o, 'y', fn),
      outTensor(o, 'u', fn),
      optionalTensor(o, 'residual', fn),
    );
    const given = (o.out ?? {}) as { y?: Tensor; u?: Tensor };
    return { y: given.y ?? wrap(r.y), u: given.u ?? wrap(r.u) };
  },

  /** g = dy·b once; dx = dy·w + scale·g·a; da = scale·gᵀ·x; db = scale·dyᵀ·u. */
  loraLinearBackward(opts: LoraLinearBackwardOptions): { dx: Tensor | null; da: Tensor; db: Tensor } {
    const fn = 'loraLinearBackward';
    const o = options(opts, fn);
    const r = native().loraLinearBackward(
      tensor(o, 'dy', fn),
      tensor(o, 'x', fn),
      tensor(o, 'w', fn),
      tensor(o, 'a', fn),
      tensor(o, 'b', fn),
      tensor(o, 'u', fn),
      finite(o, 'scale', fn),
      bool(o, 'needInputGrad', fn, true),
      outTensor(o, 'dx', fn),
      outTensor(o, 'da', fn),
      outTensor(o, 'db', fn),
      bool(o, 'accumulate', fn, false),
      bool(o, 'accumulateInputGrad', fn, false),
    );
    const given = (o.out ?? {}) as { dx?: Tensor; da?: Tensor; db?: Tensor };
    return { dx: r.dx === null ? null : given.dx ?? wrap(r.dx), da: given.da ?? wrap(r.da), db: given.db ?? wrap(r.db) };
  },

  /** Mean cross-entropy over rows whose target ≠ ignoreIndex (default -100), and its gradient. */
  maskedCrossEntropy(opts: MaskedCrossEntropyOptions): CrossEntropyResult & { dlogits: Tensor | null } {
    const fn = 'maskedCrossEntropy';
    const o = options(opts, fn);
    const r = native().maskedCrossEntropy(
      tensor(o, 'logits', fn),
      tensor(o, 'targets', fn),
      int32(o, 'ignoreIndex', fn, -100),
      normalizer(o, fn),
      bool(o, 'needGrad', fn, true),
    );
    return { loss: r.loss, count: r.count, dlogits: wrapOrNull(r.dlogits) };
  },

  /**
   * The LM head fused with the masked cross-entropy: ignored rows never reach the
   * head, the rest go through in chunks, and the full (N, V) logits never exist.
   */
  linearCrossEntropy(opts: LinearCrossEntropyOptions): CrossEntropyResult & { dh: Tensor | null; dw: Tensor | null } {
    const fn = 'linearCrossEntropy';
    const o = options(opts, fn);
    const r = native().linearCrossEntropy(
      tensor(o, 'h', fn),
      tensor(o, 'w', fn),
      tensor(o, 'targets', fn),
      int32(o, 'ignoreIndex', fn, -100),
      normalizer(o, fn),
      bool(o, 'needInputGrad', fn, true),
      bool(o, 'needWeightGrad', fn, false),
      chunkRows(o, fn),
    );
    return { loss: r.loss, count: r.count, dh: wrapOrNull(r.dh), dw: wrapOrNull(r.dw) };
  },
};
