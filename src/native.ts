// The one place that loads the native addon and types its surface.
//
// Looks for the local build (build/Release/instill.node, then build/Debug) and
// then a prebuilt binary (prebuilds/<platform>-<arch>/, through node-gyp-build);
// on failure, the error lists what was tried and how to build.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { ErrorCode, InstillError } from './errors.js';

/** Opaque native tensor (bindings/tensor.cpp). */
export interface TensorHandle {
  readonly shape: number[];
  readonly dtype: string;
  readonly device: string;
  readonly nbytes: number;
  toArray(): Float32Array | Int32Array;
  /** Lets go of the data now; the handle is unusable after (E_ARG). */
  dispose(): void;
}

export interface RuntimeInfo {
  threads: number;
  isa: string;
  isas: string[];
  features: Record<string, boolean>;
  devices: string[];
  /** The GPU in use, where 'cuda' is in devices: its name, compute capability ("9.0" for an H100 or H200: the kernels
   * on Hopper's warpgroup products take problems there), multiprocessors and memory; `gemm` says what runs the matrix
   * products: "cuBLASLt (libcublasLt.so.13)", or instill's WMMA kernel, several times slower, and why cuBLASLt is not
   * used (asking loads cuBLASLt where no product has yet). */
  cuda?: { name: string; computeCapability: string; multiprocessors: number; memoryBytes: number; gemm: string };
  /** Whether new tensors are filled with NaN (a debug aid for kernel tests). */
  poison: boolean;
  /**
   * Freed host blocks of 1 MiB and more kept for reuse (no page faults when a step allocates the same
   * buffers again): bytes held now and the limit (min(RAM / 8, 2 GiB), or INSTILL_HOST_CACHE_MB).
   */
  hostCache: { bytes: number; limit: number };
}

/** A native Llama-family model (bindings/model.cpp); src/model/model.ts wraps it. */
/** One op's total in the op profile (runtime.opProfile()). */
export interface OpProfileRow {
  /** The op (e.g. 'lora_linear_backward', 'attention_forward'). */
  op: string;
  device: 'cpu' | 'cuda';
  calls: number;
  /** Milliseconds in all: host time on the CPU, device time on a GPU. */
  ms: number;
}

export interface ModelHandle {
  setWeight(name: string, tensor: TensorHandle): void;
  checkComplete(): void;
  /** mask: bit i = LoRA target i (q, k, v, o, gate, up, down). */
  addLora(mask: number, r: number, scale: number, dropout: number): void;
  /** which: 0 A, 1 B, 2 dA, 3 dB. The handle aliases the model's tensor. */
  loraTensor(layer: number, target: number, which: number): TensorHandle;
  setLoraTensor(layer: number, target: number, which: number, values: Float32Array): void;
  setCheckpointing(on: boolean): void;
  setActivations(mode: string): void;
  activations(): { mode: string; dtype: string };
  zeroGrads(): void;
  /**
   * One optimizer step over every trainable tensor (LoRA's, or every weight in full mode): global gradient
   * norm, clipping to maxGradNorm (0: none), AdamW. Returns the norm before clipping; a norm that is not
   * finite updates nothing. optimizerStep: the same on the worker thread.
   */
  adamwStep(lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, maxGradNorm: number, step: number): number;
  optimizerStep(lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, maxGradNorm: number, step: number): Promise<number>;
  /** Trainable tensors, in the optimizer's order: LoRA, every adapter's A then B; full mode, weightNames() order. */
  trainableCount(): number;
  /** AdamW's m (which 0) or v (1) of a trainable tensor (zeros before the first step); aliases it. */
  momentTensor(index: number, which: number): TensorHandle;
  writeMoment(index: number, which: number, values: Float32Array): void;
  lossAndGrads(
    ids: TensorHandle,
    positions: TensorHandle,
    cuSeqlens: TensorHandle,
    targets: TensorHandle,
    normalizer: number,
    accumulate: boolean,
    /** uint32; LoRA dropout masks of this call derive from it (ops/lora_dropout.h). */
    dropoutSeed: number,
  ): Promise<{ loss: number; count: number }>;
  /** Forward only: the loss lossAndGrads would return; no gradient is touched, no dropout. */
  loss(ids: TensorHandle, positions: TensorHandle, cuSeqlens: TensorHandle, targets: TensorHandle, normalizer: number): Promise<{ loss: number; count: number }>;
  /** Full fine-tuning mode: every weight trainable (f32) with a gradient buffer. */
  setFull(on: boolean): void;
  /** Every weight's Hugging Face name. */
  weightNames(): string[];
  /** The weight, or (grad, full mode) its gradient, by HF name; the handle aliases the model's tensor. */
  weightTensor(name: string, grad: boolean): TensorHandle;
  /** Copies values into an f32 weight (or, full mode, its gradient) in place. */
  writeWeight(name: string, grad: boolean, values: Float32Array): void;
  /** (N, V); (rows, N / rows, V) when rows > 0 and not lastOnly; (segments, V) when lastOnly. */
  logits(ids: TensorHandle, positions: TensorHandle, cuSeqlens: TensorHandle, lastOnly: boolean, rows: number): Promise<TensorHandle>;
  /** Frees the native model now; later calls throw E_ARG. */
  dispose(): void;
  /** Allocates and empties the KV cache of one sequence (generation). */
  decodeReset(maxLen: number): void;
  /** Appends ids to the cached sequence; logits (1, V) of the last one. */
  decode(ids: TensorHandle): Promise<TensorHandle>;
}

export interface NativeModelConfig {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  eps: number;
  qkvBias: boolean;
  qkNorm: boolean;
  tied: boolean;
  /** 0: full causal attention; W > 0: each token sees itself and the W - 1 tokens before it. */
  slidingWindow: number;
  /** 'cpu' (default) or 'cuda' */
  device?: string;
}

export interface NativeAddon {
  init(errorClass: typeof InstillError): void;
  TensorHandle: new () => TensorHandle;
  tensorFromArray(data: Float32Array | Float64Array | Int32Array | Uint16Array, shape: number[], dtype: string): TensorHandle;
  tensorZeros(shape: number[], dtype: string, device?: string): TensorHandle;
  /** The same handle when already on `device`, else a copy there. */
  tensorTo(tensor: TensorHandle, device: string): TensorHandle;
  /** '' when tensors can live on `device` in this build on this machine, else why not. */
  deviceUnavailableReason(device: string): string;
  /** Bytes of GPU memory through instill: live, peak since the last reset, held from the driver. */
  deviceMemoryStats(device: string, resetPeak?: boolean): { inUse: number; peak: number; reserved: number };
  /** Gives a GPU's cached idle blocks back to the driver: the bytes given back. */
  releaseDeviceMemory(device: string): number;
  /** Kernels launched on a GPU so far in this process, how many as programmatic dependent launches
   * (INSTILL_CUDA_NEXT=pdl), and whether a launch now would be one ('on') or why not: for tests and benchmarks. */
  deviceLaunchCounts(device: string): { launches: number; programmatic: number; pdl: string };

  matmul(a: TensorHandle, b: TensorHandle, transA: boolean, transB: boolean, out: TensorHandle | null): TensorHandle;
  loraLinear(
    x: TensorHandle,
    w: TensorHandle,
    bias: TensorHandle | null,
    a: TensorHandle,
    b: TensorHandle,
    scale: number,
    yOut?: TensorHandle | null,
    uOut?: TensorHandle | null,
    residual?: TensorHandle | null,
  ): { y: TensorHandle; u: TensorHandle };
  loraLinearBackward(
    dy: TensorHandle,
    x: TensorHandle,
    w: TensorHandle,
    a: TensorHandle,
    b: TensorHandle,
    u: TensorHandle,
    scale: number,
    needDx: boolean,
    dxOut?: TensorHandle | null,
    daOut?: TensorHandle | null,
    dbOut?: TensorHandle | null,
    accumulate?: boolean,
    accumulateDx?: boolean,
  ): { dx: TensorHandle | null; da: TensorHandle; db: TensorHandle };
  maskedCrossEntropy(
    logits: TensorHandle,
    targets: TensorHandle,
    ignoreIndex: number,
    normalizer: number,
    needGrad: boolean,
  ): { loss: number; count: number; dlogits: TensorHandle | null };
  linearCrossEntropy(
    h: TensorHandle,
    w: TensorHandle,
    targets: TensorHandle,
    ignoreIndex: number,
    normalizer: number,
    needInputGrad: boolean,
    needWeightGrad: boolean,
    chunkRows: number,
  ): { loss: number; count: number; dh: TensorHandle | null; dw: TensorHandle | null };

  modelCreate(config: NativeModelConfig, invFreq: TensorHandle): ModelHandle;
  // The model's ops one at a time (bindings/model_ops.cpp), for op tests and benchmarks.
  opEmbedding(ids: TensorHandle, w: TensorHandle): TensorHandle;
  opEmbeddingBackward(dout: TensorHandle, ids: TensorHandle, V: number): TensorHandle;
  opRmsnorm(x: TensorHandle, w: TensorHandle, eps: number, yDtype?: string): { y: TensorHandle; rstd: TensorHandle };
  opRmsnormPacked(x: TensorHandle, w: TensorHandle, eps: number, packed: TensorHandle): TensorHandle;
  opRmsnormBackwardPacked(dy: TensorHandle, x: TensorHandle, w: TensorHandle, rstd: TensorHandle, dx: TensorHandle, accumulate: boolean, packed: TensorHandle): void;
  opRmsnormBackward(dy: TensorHandle, x: TensorHandle, w: TensorHandle, rstd: TensorHandle): { dx: TensorHandle; dw: TensorHandle };
  opRope(x: TensorHandle, positions: TensorHandle, invFreq: TensorHandle, backward: boolean): TensorHandle;
  opRopePair(x: TensorHandle, x2: TensorHandle, positions: TensorHandle, invFreq: TensorHandle, backward: boolean): { out: TensorHandle; out2: TensorHandle };
  opAttention(q: TensorHandle, k: TensorHandle, v: TensorHandle, cuSeqlens: TensorHandle, scale: number, window?: number): { out: TensorHandle; lse: TensorHandle };
  opAttentionBackward(
    dout: TensorHandle,
    q: TensorHandle,
    k: TensorHandle,
    v: TensorHandle,
    out: TensorHandle,
    lse: TensorHandle,
    cuSeqlens: TensorHandle,
    scale: number,
    window?: number,
  ): { dq: TensorHandle; dk: TensorHandle; dv: TensorHandle };
  opAttentionDecode(
    q: TensorHandle,
    k: TensorHandle,
    v: TensorHandle,
    kCache: TensorHandle,
    vCache: TensorHandle,
    start: number,
    scale: number,
    window?: number,
  ): TensorHandle;
  opSwiglu(gate: TensorHandle, up: TensorHandle): TensorHandle;
  opSwigluBackward(dout: TensorHandle, gate: TensorHandle, up: TensorHandle): { dgate: TensorHandle; dup: TensorHandle };
  opSwigluPacked(gate: TensorHandle, up: TensorHandle, outPacked: TensorHandle): void;
  opSwigluBackwardPacked(dout: TensorHandle, gate: TensorHandle, up: TensorHandle, dgu: TensorHandle): void;
  opAdamw(
    param: TensorHandle,
    grad: TensorHandle,
    m: TensorHandle,
    v: TensorHandle,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    step: number,
    gradScale?: number,
  ): void;
  opSumSquares(tensors: TensorHandle[]): number;

  runtimeInfo(): RuntimeInfo;
  setThreads(n: number): void;
  setIsa(name: string): void;
  setPoison(on: boolean): void;
  releaseHostMemory(): number;
  nextKernels(): string[];
  setOpProfile(on: boolean): void;
  takeOpProfile(): OpProfileRow[];
}

/** Repository (or installed package) root: src/ and dist/src/ both resolve to it. */
export const packageRoot: string = (() => {
  const here = dirname(fileURLToPath(import.meta.url));
  return here.endsWith(join('dist', 'src')) ? join(here, '..', '..') : join(here, '..');
})();

let addon: NativeAddon | undefined;
let addonFrom = '';

/** Where the loaded addon came from: its file, or node-gyp-build's prebuilds (loads it first). */
export function addonLocation(): string {
  native();
  return addonFrom;
}

/** Where a local build of the addon may be, in the order they are tried. */
export function addonPaths(): string[] {
  return ['Release', 'Debug'].map((d) => join(packageRoot, 'build', d, 'instill.node')).filter((p) => existsSync(p));
}

export function native(): NativeAddon {
  if (addon) return addon;
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  let loaded: NativeAddon | undefined;
  for (const candidate of addonPaths()) {
    try {
      loaded = require(candidate) as NativeAddon;
      addonFrom = candidate;
      break;
    } catch (err) {
      tried.push(`${candidate}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  if (!loaded) {
    try {
      const load = require('node-gyp-build') as ((dir: string) => unknown) & { path(dir: string): string };
      const found = load(packageRoot) as NativeAddon;
      // (node-gyp-build takes any addon in build/Release, such as the benchmarks' reference one: not ours)
      if (typeof found?.init !== 'function') throw new Error(`${load.path(packageRoot)} is not the instill addon`);
      loaded = found;
      addonFrom = `${load.path(packageRoot)} (node-gyp-build)`;
    } catch (err) {
      tried.push(`prebuilds via node-gyp-build(${packageRoot}): ${(err as Error).message.split('\n')[0]}`);
    }
  }
  if (!loaded) {
    throw new InstillError(
      ErrorCode.LOAD,
      `could not load the instill native addon.\nTried:\n  ${tried.join('\n  ')}\n` +
        `Build it with \`npm run build:native\` in ${packageRoot} (needs cmake and a C++17 compiler).`,
    );
  }
  loaded.init(InstillError);
  addon = loaded;
  return loaded;
}
