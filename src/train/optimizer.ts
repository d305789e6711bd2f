// AdamW over named fp32 tensors, with fp32 moments the trainer can save and restore exactly,
// and global gradient-norm clipping.
//
// Why in TypeScript: the engine's fused AdamW (model.adamwStep) keeps its moments inside the addon
// with no way to read or write them, so a checkpoint could not hold them and a resumed run would
// diverge. Until the binding exposes them, the trainer keeps the master copy of the trainable
// tensors and their moments here and writes the weights back with setAdapterWeights after each step.
// The update is the engine's, element for element (cpu/adamw.cpp): computed in double, stored f32,
//   m = b1·m + (1−b1)·g;  v = b2·v + (1−b2)·g²
//   w = w·(1 − lr·wd) − (lr / (1−b1^t)) · m / (√v / √(1−b2^t) + eps)
// in one pass per tensor. LoRA tensors are small (r·(in+out) per module), so this costs far less
// than the forward/backward it follows.
//
// Clipping follows torch.nn.utils.clip_grad_norm_: the L2 norm over every gradient together
// (accumulated in double); when it exceeds maxNorm, every gradient is multiplied by maxNorm / (norm + 1e-6).
import { ErrorCode, InstillError } from '../errors.js';

export interface AdamwHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export interface AdamwState {
  /** Optimizer steps taken. */
  step: number;
  m: Record<string, Float32Array>;
  v: Record<string, Float32Array>;
}

export class AdamW {
  private t = 0;
  private readonly m = new Map<string, Float32Array>();
  private readonly v = new Map<string, Float32Array>();

  get step(): number {
    return this.t;
  }

  /**
   * Updates `params` in place from `grads` (same names and lengths). Yields to the event loop between
   * tensors once 4 ms have passed, so a large adapter never blocks a server's timers.
   */
  async update(params: Record<string, Float32Array>, grads: Record<string, Float32Array>, h: AdamwHyper): Promise<void> {
    this.t++;
    const bc1 = 1 - Math.pow(h.beta1, this.t);
    const bc2 = 1 - Math.pow(h.beta2, this.t);
    const stepSize = h.lr / bc1;
    const sqrtBc2 = Math.sqrt(bc2);
    const decay = 1 - h.lr * h.weightDecay;
    const b1 = h.beta1, b2 = h.beta2, eps = h.eps;
    let since = performance.now();
    for (const name of Object.keys(params)) {
      const w = params[name];
      const g = grads[name];
      if (!g || g.length !== w.length) throw new InstillError(ErrorCode.INTERNAL, `AdamW: gradient of '${name}' is missing or has the wrong length`);
      let m = this.m.get(name);
      let v = this.v.get(name);
      if (!m || !v) {
        m = new Float32Array(w.length);
        v = new Float32Array(w.length);
        this.m.set(name, m);
        this.v.set(name, v);
      }
      for (let i = 0; i < w.length; i++) {
        const gi = g[i];
        const mi = b1 * m[i] + (1 - b1) * gi;
        const vi = b2 * v[i] + (1 - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] * decay - (stepSize * mi) / (Math.sqrt(vi) / sqrtBc2 + eps);
      }
      if (performance.now() - since > 4) {
        await new Promise((r) => setImmediate(r));
        since = performance.now();
      }
    }
  }

  state(): AdamwState {
    return { step: this.t, m: Object.fromEntries(this.m), v: Object.fromEntries(this.v) };
  }

  /** Restores a saved state; `names` (the trainable tensors) must all have moments of `sizes`. */
  load(state: AdamwState, sizes: Record<string, number>): void {
    if (!Number.isInteger(state.step) || state.step < 0) throw new InstillError(ErrorCode.DATA, `optimizer state: step must be an integer >= 0, got ${state.step}`);
    this.m.clear();
    this.v.clear();
    if (state.step > 0) {
      for (const [name, n] of Object.entries(sizes)) {
        const m = state.m[name];
        const v = state.v[name];
        if (!m || !v) throw new InstillError(ErrorCode.DATA, `optimizer state has no moments for '${name}': the checkpoint belongs to another adapter configuration`);
        if (m.length !== n || v.length !== n) throw new InstillError(ErrorCode.DATA, `optimizer state: moments of '${name}' have ${m.length} values, the tensor has ${n}`);
        this.m.set(name, Float32Array.from(m));
        this.v.set(name, Float32Array.from(v));
      }
    }
    this.t = state.step;
  }
}

/** Global L2 norm of all gradients (before clipping); scales them in place when it exceeds maxNorm > 0. */
export function clipGradNorm(grads: Record<string, Float32Array>, maxNorm: number): number {
  let sq = 0;
  for (const g of Object.values(grads)) for (let i = 0; i < g.length; i++) sq += g[i] * g[i];
  const norm = Math.sqrt(sq);
  if (maxNorm > 0 && Number.isFinite(norm) && norm > maxNorm) {
    const coef = maxNorm / (norm + 1e-6);
    for (const g of Object.values(grads)) for (let i = 0; i < g.length; i++) g[i] *= coef;
  }
  return norm;
}
