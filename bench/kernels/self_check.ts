// The self-check that `instill bench kernels` runs before timing anything: every
// kernel, on every ISA this CPU runs, against the float64 reference on fresh
// random inputs of awkward sizes (N=37, in=123, out=77, r=5, some rows ignored).
import { Tensor, kernels, runtime } from '../../src/index.js';
import {
  crossEntropy64, linearCrossEntropy64, loraLinear64, loraLinearBackward64, matmul64, randn, relError, rng,
} from './reference.js';

export interface CheckResult {
  isa: string;
  kernel: string;
  /** normwise relative error of the worst output */
  error: number;
  tolerance: number;
  ok: boolean;
}

const N = 37, IN = 123, OUT = 77, R = 5, V = 77;

function targetsFor(rand: () => number, n: number, v: number): Int32Array {
  const t = new Int32Array(n);
  for (let i = 0; i < n; i++) t[i] = i % 3 === 1 ? -100 : Math.floor(rand() * v);
  return t;
}

function checkOnce(seed: number): { kernel: string; error: number; tolerance: number }[] {
  const rand = rng(seed);
  const out: { kernel: string; error: number; tolerance: number }[] = [];
  const x = randn(rand, N * IN), w = randn(rand, OUT * IN, 0.5), a = randn(rand, R * IN, 0.5);
  const b = randn(rand, OUT * R, 0.5), bias = randn(rand, OUT), dy = randn(rand, N * OUT);
  const scale = 2;

  const mm = kernels.matmul({ a: Tensor.from(x, [N, IN]), b: Tensor.from(w, [OUT, IN]), transB: true }).toArray();
  out.push({
    kernel: 'matmul',
    error: relError(mm, matmul64(N, OUT, IN, (i, k) => x[i * IN + k], (k, j) => w[j * IN + k])),
    tolerance: 1e-5,
  });

  for (const dtype of ['f32', 'bf16'] as const) {
    const tol = dtype === 'f32' ? 1e-5 : 1e-2;
    const xt = Tensor.from(x, [N, IN]), wt = Tensor.from(w, [OUT, IN], { dtype });
    const at = Tensor.from(a, [R, IN]), bt = Tensor.from(b, [OUT, R]);
    const fwd = kernels.loraLinear({ x: xt, w: wt, bias: Tensor.from(bias, [OUT]), a: at, b: bt, scale });
    const ref = loraLinear64(x, w, bias, a, b, scale, N, IN, OUT, R);
    out.push({ kernel: `loraLinear (w ${dtype})`, error: relError(fwd.y.toArray(), ref.y), tolerance: tol });
    const g = kernels.loraLinearBackward({ dy: Tensor.from(dy, [N, OUT]), x: xt, w: wt, a: at, b: bt, u: fwd.u, scale });
    const gr = loraLinearBackward64(dy, x, w, a, b, scale, N, IN, OUT, R);
    out.push({
      kernel: `loraLinearBackward (w ${dtype})`,
      error: Math.max(relError(g.dx!.toArray(), gr.dx), relError(g.da.toArray(), gr.da), relError(g.db.toArray(), gr.db)),
      tolerance: tol,
    });
  }

  const logits = randn(rand, N * V, 1e4);
  const targets = targetsFor(rand, N, V);
  const ce = kernels.maskedCrossEntropy({ logits: Tensor.from(logits, [N, V]), targets: Tensor.from(targets, [N]) });
  const ceRef = crossEntropy64(logits, targets, N, V);
  out.push({
    kernel: 'maskedCrossEntropy (|logits| ~ 1e4)',
    error: Math.max(Math.abs(ce.loss - ceRef.loss) / Math.abs(ceRef.loss), relError(ce.dlogits!.toArray(), ceRef.dlogits)),
    tolerance: 1e-5,
  });

  const h = randn(rand, N * IN);
  const head = randn(rand, V * IN, 0.3);
  const lce = kernels.linearCrossEntropy({
    h: Tensor.from(h, [N, IN]), w: Tensor.from(head, [V, IN]), targets: Tensor.from(targets, [N]), needWeightGrad: true, chunkRows: 8,
  });
  const lref = linearCrossEntropy64(h, head, targets, N, IN, V);
  out.push({
    kernel: 'linearCrossEntropy',
    error: Math.max(
      Math.abs(lce.loss - lref.loss) / Math.abs(lref.loss),
      relError(lce.dh!.toArray(), lref.dh),
      relError(lce.dw!.toArray(), lref.dw),
    ),
    tolerance: 1e-5,
  });
  return out;
}

/** Runs the check on every supported ISA and restores the active one. */
export function selfCheck(seed: number): CheckResult[] {
  const info = runtime.info();
  const results: CheckResult[] = [];
  try {
    for (const isa of info.isas) {
      runtime.setIsa(isa);
      for (const r of checkOnce(seed)) results.push({ isa, ...r, ok: r.error <= r.tolerance });
    }
  } finally {
    runtime.setIsa(info.isa);
  }
  return results;
}
