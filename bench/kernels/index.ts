// `instill bench kernels`: self-check, then GFLOP/s of the kernels at real
// training shapes beside the references, then the peak memory of the fused LM
// head + loss.
//
// Shapes: 1024³ and 2048³ GEMMs, and the projections of SmolLM2-135M
// (hidden 576, intermediate 1536, 3 KV heads × 64 = 192, vocab 49152) at
// N = 4096 tokens with LoRA rank 16. `--quick` uses N = 512 and skips 2048³.
//
// References, timed alternately with instill in the same run (instill, OpenBLAS,
// PyTorch, instill, ...), medians of the repeats: OpenBLAS sgemm (and the LoRA
// linear composed from separate sgemm calls plus the element-wise passes the
// fusion removes), and with --torch the same computations in PyTorch eager.
import { ErrorCode, InstillError, Tensor, kernels, runtime } from '../../src/index.js';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { median } from '../harness.js';
import { MEMORY_SHAPE } from './memory.js';
import { loadOpenBlas, type OpenBlas } from '../reference/openblas.js';
import { TorchReference } from '../reference/torch.js';
import { randn, rng } from './reference.js';
import { selfCheck, type CheckResult } from './self_check.js';

export interface KernelsBenchOptions {
  quick: boolean;
  repeats: number;
  torch: boolean;
  /** time only the rows whose "kernel shape dtype" contains this text; no memory measurement */
  only?: string;
  /** print progress lines */
  progress: (line: string) => void;
}

export interface BenchRow {
  kernel: string;
  shape: string;
  dtype: string;
  gflop: number;
  /** median seconds */
  ours: number;
  openblas: number | null;
  torch: number | null;
  oursGflops: number;
  /** reference seconds / our seconds: > 1 means instill is faster */
  vsOpenblas: number | null;
  vsTorch: number | null;
}

export interface MemoryResult {
  shape: string;
  /** extra resident memory of kernels.linearCrossEntropy, bytes */
  fusedPeakBytes: number | null;
  /** the same loss through materialised logits (matmul + maskedCrossEntropy + matmul), bytes */
  materialisedPeakBytes: number | null;
  /** size of one (N, V) f32 logits matrix, bytes */
  logitsBytes: number;
}

export interface KernelsBenchReport {
  date: string;
  runtime: ReturnType<typeof runtime.info>;
  references: { openblas: string; torch: string };
  seed: number;
  selfCheck: CheckResult[];
  rows: BenchRow[];
  memory: MemoryResult | null;
}

interface Workload {
  kernel: string;
  shape: string;
  dtype: string;
  gflop: number;
  ours: () => void;
  openblas?: () => void;
  torch?: Record<string, unknown>;
  repeats?: number;
}

function tensor(rand: () => number, shape: number[], scale = 1, dtype: 'f32' | 'bf16' = 'f32'): Tensor {
  return Tensor.from(randn(rand, shape.reduce((a, b) => a * b, 1), scale), shape, { dtype });
}

function halfIgnored(rand: () => number, n: number, v: number): Tensor {
  const t = new Int32Array(n);
  for (let i = 0; i < n; i++) t[i] = i % 2 ? -100 : Math.floor(rand() * v);
  return Tensor.from(t, [n]);
}

function workloads(rand: () => number, quick: boolean, blas: OpenBlas | null): Workload[] {
  const out: Workload[] = [];
  const f32 = (n: number) => randn(rand, n);
  const n = quick ? 512 : 4096;
  const r = 16;

  // GEMM: squares, and x·Wᵀ at the training shapes.
  const gemms: [string, number, number, number][] = (quick ? [1024] : [1024, 2048]).map((s) => [`${s}³`, s, s, s]);
  for (const [inF, outF] of [[576, 576], [576, 192], [576, 1536], [1536, 576], [576, 49152]] as const) {
    gemms.push([`x·Wᵀ N=${n} ${inF}->${outF}`, n, outF, inF]);
  }
  for (const [label, m, nn, k] of gemms) {
    const transB = label.startsWith('x');
    const a = f32(m * k), b = f32(k * nn), c = new Float32Array(m * nn);
    // Results go into preallocated outputs on both sides (as OpenBLAS's does), so the timing is the
    // product, not the page faults of a fresh 805 MB output at the 49152-wide shape.
    const ct = Tensor.zeros([m, nn]);
    for (const dtype of ['f32', 'bf16'] as const) {
      // bf16 rows: both operands bf16, f32 accumulation, as PyTorch's bf16 matmul
      const at = Tensor.from(a, [m, k], { dtype });
      const bt = Tensor.from(b, transB ? [nn, k] : [k, nn], { dtype });
      out.push({
        kernel: 'matmul', shape: label, dtype, gflop: (2 * m * nn * k) / 1e9,
        ours: () => void kernels.matmul({ a: at, b: bt, transB, out: ct }),
        openblas: dtype === 'f32' && blas ? () => blas.sgemm(a, b, c, m, nn, k, false, transB, 1, 0) : undefined,
        torch: { op: 'matmul', M: m, N: nn, K: k, transA: false, transB, dtype },
        repeats: nn > 10000 ? 3 : undefined,
      });
    }
  }

  // Fused LoRA linear forward + backward.
  for (const [inF, outF] of [[576, 576], [576, 192], [576, 1536], [1536, 576]] as const) {
    const xa = f32(n * inF), wa = f32(outF * inF), aa = f32(r * inF), ba = f32(outF * r), dya = f32(n * outF);
    const scratch = (len: number) => new Float32Array(len);
    const y = scratch(n * outF), u = scratch(n * r), t = scratch(n * outF), g = scratch(n * r);
    const dx = scratch(n * inF), dx2 = scratch(n * inF), da = scratch(r * inF), db = scratch(outF * r);
    const flop = 2 * n * (inF * outF + inF * r + r * outF) + 2 * n * (outF * r + outF * inF + r * inF + r * inF + outF * r);
    // Outputs preallocated on every side (the composed OpenBLAS version writes into its own
    // buffers too): the timing is the arithmetic, not first-touch page faults of fresh outputs.
    const yt = Tensor.zeros([n, outF]), ut = Tensor.zeros([n, r]), dxt = Tensor.zeros([n, inF]);
    const dat = Tensor.zeros([r, inF]), dbt = Tensor.zeros([outF, r]);
    for (const dtype of ['f32', 'bf16'] as const) {
      const x = Tensor.from(xa, [n, inF]), w = Tensor.from(wa, [outF, inF], { dtype });
      const a = Tensor.from(aa, [r, inF]), b = Tensor.from(ba, [outF, r]), dy = Tensor.from(dya, [n, outF]);
      out.push({
        kernel: 'loraLinear fwd+bwd', shape: `N=${n} ${inF}->${outF} r=${r}`, dtype, gflop: flop / 1e9,
        ours: () => {
          kernels.loraLinear({ x, w, a, b, scale: 2, out: { y: yt, u: ut } });
          kernels.loraLinearBackward({ dy, x, w, a, b, u: ut, scale: 2, out: { dx: dxt, da: dat, db: dbt } });
        },
        openblas: dtype === 'f32' && blas
          ? () => blas.loraComposed(xa, wa, aa, ba, dya, y, u, t, g, dx, dx2, da, db, n, inF, outF, r, 2)
          : undefined,
        torch: { op: 'lora', N: n, IN: inF, OUT: outF, R: r, scale: 2, dtype },
      });
    }
  }

  // The LM head fused with the loss, half the rows ignored.
  {
    const c = 576, v = 49152;
    const h = tensor(rand, [n, c]), w = tensor(rand, [v, c], 0.05), targets = halfIgnored(rand, n, v);
    out.push({
      kernel: 'linearCrossEntropy fwd+bwd', shape: `N=${n} C=${c} V=${v}, half ignored`, dtype: 'f32',
      gflop: (4 * Math.ceil(n / 2) * c * v) / 1e9,
      ours: () => void kernels.linearCrossEntropy({ h, w, targets }),
      torch: { op: 'linear_ce', N: n, C: c, V: v, dtype: 'f32' },
      repeats: 3,
    });
  }
  return out;
}

function timeOnce(fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

export async function runKernelsBench(opts: KernelsBenchOptions): Promise<KernelsBenchReport> {
  const seed = Math.floor(Math.random() * 2 ** 31);
  const rand = rng(seed);
  const info = runtime.info();
  opts.progress(`self-check on ${info.isas.join(', ')} (seed ${seed})`);
  const check = selfCheck(seed);

  const blasOrWhy = loadOpenBlas(info.threads);
  const blas = 'unavailable' in blasOrWhy ? null : blasOrWhy;
  let torch: TorchReference | null = null;
  let torchNote = 'not asked (--torch)';
  if (opts.torch) {
    const t = await TorchReference.start(info.threads);
    if ('unavailable' in t) torchNote = t.unavailable;
    else {
      torch = t;
      torchNote = `PyTorch ${t.version}`;
    }
  }

  const rows: BenchRow[] = [];
  try {
    const only = opts.only;
    const chosen = workloads(rand, opts.quick, blas).filter((wl) => !only || `${wl.kernel} ${wl.shape} ${wl.dtype}`.includes(only));
    if (chosen.length === 0) throw new InstillError(ErrorCode.ARG, `No benchmark row matches --only '${only}'`);
    for (const wl of chosen) {
      opts.progress(`${wl.kernel} ${wl.shape} ${wl.dtype}`);
      const torchId = torch && wl.torch ? await torch.setup(wl.torch) : null;
      wl.ours();
      wl.openblas?.();
      const ours: number[] = [], ob: number[] = [], tt: number[] = [];
      for (let i = 0; i < (wl.repeats ?? opts.repeats); i++) {
        ours.push(timeOnce(wl.ours));
        if (wl.openblas) ob.push(timeOnce(wl.openblas));
        if (torch && torchId) tt.push(await torch.run(torchId));
      }
      if (torch && torchId) await torch.free(torchId);
      const mo = median(ours);
      const mb = ob.length ? median(ob) : null;
      const mt = tt.length ? median(tt) : null;
      rows.push({
        kernel: wl.kernel, shape: wl.shape, dtype: wl.dtype, gflop: wl.gflop, ours: mo, openblas: mb, torch: mt,
        oursGflops: wl.gflop / mo, vsOpenblas: mb === null ? null : mb / mo, vsTorch: mt === null ? null : mt / mo,
      });
    }
  } finally {
    torch?.close();
  }

  const memory = opts.quick || opts.only ? null : measureLinearCrossEntropyMemory(opts);
  return {
    date: new Date().toISOString(),
    runtime: runtime.info(),
    references: { openblas: 'unavailable' in blasOrWhy ? blasOrWhy.unavailable : blasOrWhy.library, torch: torchNote },
    seed,
    selfCheck: check,
    rows,
    memory,
  };
}

/**
 * Peak extra memory of the fused LM head + loss at N=4096, C=576, V=49152 (half
 * the rows ignored), against the same loss through materialised logits, each in a
 * fresh process (bench/kernels/memory.ts).
 */
function measureLinearCrossEntropyMemory(opts: KernelsBenchOptions): MemoryResult {
  const { n, c, v } = MEMORY_SHAPE;
  opts.progress(`peak memory of linearCrossEntropy N=${n} C=${c} V=${v} (fresh processes)`);
  const script = fileURLToPath(new URL('./memory.js', import.meta.url));
  const peak = (path: string): number | null => {
    if (!existsSync(script)) return null; // running from sources: the compiled script is needed
    const r = spawnSync(process.execPath, [script, path], { encoding: 'utf8' });
    if (r.status !== 0) return null;
    return (JSON.parse(r.stdout.trim().split('\n').pop() as string) as { peakExtraBytes: number | null }).peakExtraBytes;
  };
  return {
    shape: `N=${n} C=${c} V=${v}, half the rows ignored`,
    fusedPeakBytes: peak('fused'),
    materialisedPeakBytes: peak('materialised'),
    logitsBytes: n * v * 4,
  };
}
