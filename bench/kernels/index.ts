// `instill bench kernels`: self-check, then GFLOP/s of the kernels at real
// training shapes, then the peak memory of the fused LM head + loss.
//
// Shapes: 1024³ and 2048³ GEMMs, and the projections of SmolLM2-135M
// (hidden 576, intermediate 1536, 3 KV heads × 64 = 192, vocab 49152) at
// N = 4096 tokens with LoRA rank 16. `--quick` uses N = 512 and skips 2048³.
import { Tensor, kernels, runtime } from '../../src/index.js';
import { measure, measureAlternating, peakMemoryOf, type Timing } from '../harness.js';
import { randn, rng } from './reference.js';
import { selfCheck, type CheckResult } from './self_check.js';

export interface KernelsBenchOptions {
  quick: boolean;
  repeats: number;
  /** print progress lines to stderr */
  progress: (line: string) => void;
}

export interface BenchRow {
  kernel: string;
  shape: string;
  dtype: string;
  gflop: number;
  timing: Timing;
  gflops: number;
}

export interface MemoryResult {
  shape: string;
  /** extra resident memory of kernels.linearCrossEntropy, bytes */
  fusedPeakBytes: number | null;
  /** the same loss through materialised logits (matmul + maskedCrossEntropy + matmul), bytes */
  materialisedPeakBytes: number | null;
  /** size of one (N, V) f32 logits matrix, bytes */
  logitsBytes: number;
  fusedSeconds: number;
  materialisedSeconds: number;
}

export interface KernelsBenchReport {
  date: string;
  runtime: ReturnType<typeof runtime.info>;
  seed: number;
  selfCheck: CheckResult[];
  rows: BenchRow[];
  memory: MemoryResult | null;
}

function f32(rand: () => number, shape: number[], scale = 1, dtype: 'f32' | 'bf16' = 'f32'): Tensor {
  return Tensor.from(randn(rand, shape.reduce((a, b) => a * b, 1), scale), shape, { dtype });
}

function halfIgnored(rand: () => number, n: number, v: number): Tensor {
  const t = new Int32Array(n);
  for (let i = 0; i < n; i++) t[i] = i % 2 ? -100 : Math.floor(rand() * v);
  return Tensor.from(t, [n]);
}

export function runKernelsBench(opts: KernelsBenchOptions): KernelsBenchReport {
  const seed = Math.floor(Math.random() * 2 ** 31);
  const rand = rng(seed);
  const info = runtime.info();
  opts.progress(`self-check on ${info.isas.join(', ')} (seed ${seed})`);
  const check = selfCheck(seed);

  const rows: BenchRow[] = [];
  const add = (kernel: string, shape: string, dtype: string, gflop: number, fn: () => void, repeats = opts.repeats) => {
    opts.progress(`timing ${kernel} ${shape} ${dtype}`);
    const timing = measure(fn, repeats, 1);
    rows.push({ kernel, shape, dtype, gflop, timing, gflops: gflop / timing.median });
  };

  // GEMM: square, and x·Wᵀ at the training shapes.
  const squares = opts.quick ? [1024] : [1024, 2048];
  for (const s of squares) {
    const a = f32(rand, [s, s]), b = f32(rand, [s, s]);
    add('matmul', `${s}x${s}x${s}`, 'f32', (2 * s * s * s) / 1e9, () => void kernels.matmul({ a, b }));
  }
  const n = opts.quick ? 512 : 4096;
  const r = 16;
  const projections: [number, number][] = [[576, 576], [576, 192], [576, 1536], [1536, 576]];
  for (const dtype of ['f32', 'bf16'] as const) {
    for (const [inF, outF] of projections) {
      const x = f32(rand, [n, inF]), w = f32(rand, [outF, inF], 0.05, dtype);
      const a = f32(rand, [r, inF], 0.05), b = f32(rand, [outF, r], 0.05), dy = f32(rand, [n, outF]);
      const flop = 2 * n * (inF * outF + inF * r + r * outF) + 2 * n * (outF * r + outF * inF + r * inF + r * inF + outF * r);
      add('loraLinear fwd+bwd', `N=${n} ${inF}->${outF} r=${r}`, dtype, flop / 1e9, () => {
        const { u } = kernels.loraLinear({ x, w, a, b, scale: 2 });
        kernels.loraLinearBackward({ dy, x, w, a, b, u, scale: 2 });
      });
    }
  }
  const c = 576, v = 49152;
  {
    const h = f32(rand, [n, c]), w = f32(rand, [v, c], 0.05), targets = halfIgnored(rand, n, v);
    const rowsUsed = Math.ceil(n / 2);
    add('linearCrossEntropy fwd+bwd (half ignored)', `N=${n} C=${c} V=${v}`, 'f32', (4 * rowsUsed * c * v) / 1e9,
      () => void kernels.linearCrossEntropy({ h, w, targets }), Math.min(opts.repeats, 3));
  }

  let memory: MemoryResult | null = null;
  if (!opts.quick) memory = measureLinearCrossEntropyMemory(rand, opts);
  return { date: new Date().toISOString(), runtime: runtime.info(), seed, selfCheck: check, rows, memory };
}

/**
 * Peak extra memory of the fused LM head + loss at N=4096, C=576, V=49152 (half
 * the rows ignored), against the same loss through materialised logits.
 */
function measureLinearCrossEntropyMemory(rand: () => number, opts: KernelsBenchOptions): MemoryResult {
  const n = 4096, c = 576, v = 49152;
  opts.progress(`peak memory of linearCrossEntropy N=${n} C=${c} V=${v}`);
  const h = f32(rand, [n, c]), w = f32(rand, [v, c], 0.05), targets = halfIgnored(rand, n, v);
  const fused = () => void kernels.linearCrossEntropy({ h, w, targets });
  const materialised = () => {
    const logits = kernels.matmul({ a: h, b: w, transB: true });
    const ce = kernels.maskedCrossEntropy({ logits, targets });
    kernels.matmul({ a: ce.dlogits!, b: w });
  };
  const [tf, tm] = measureAlternating([fused, materialised], 1, 0);
  const pf = peakMemoryOf(fused);
  const pm = peakMemoryOf(materialised);
  return {
    shape: `N=${n} C=${c} V=${v}, half the rows ignored`,
    fusedPeakBytes: pf?.peakBytes ?? null,
    materialisedPeakBytes: pm?.peakBytes ?? null,
    logitsBytes: n * v * 4,
    fusedSeconds: tf.median,
    materialisedSeconds: tm.median,
  };
}
