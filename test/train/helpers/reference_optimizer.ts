// A reference optimizer for the tests, in plain TypeScript over Float32Array records: global
// gradient-norm clipping as torch.nn.utils.clip_grad_norm_ does it (the L2 norm over every gradient
// together, accumulated in double; above maxNorm every gradient is multiplied by maxNorm / (norm + 1e-6)
// and stored f32), then AdamW as torch.optim.AdamW computes it, per element in double, stored f32:
//   m = b1·m + (1−b1)·g;  v = b2·v + (1−b2)·g²
//   w = w·(1 − lr·wd) − (lr / (1−b1^t)) · m / (√v / √(1−b2^t) + eps)
// The engine's optimizer (model.adamwStep / optimizerStep) is tested against it. (Until the engine
// exposed its moments, this was the trainer's own optimizer.)

export interface AdamwHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export class ReferenceAdamW {
  private t = 0;
  readonly m = new Map<string, Float32Array>();
  readonly v = new Map<string, Float32Array>();

  /** Updates `params` in place from `grads` (same names and lengths). */
  update(params: Record<string, Float32Array>, grads: Record<string, Float32Array>, h: AdamwHyper): void {
    this.t++;
    const bc1 = 1 - Math.pow(h.beta1, this.t);
    const sqrtBc2 = Math.sqrt(1 - Math.pow(h.beta2, this.t));
    const stepSize = h.lr / bc1;
    const decay = 1 - h.lr * h.weightDecay;
    for (const name of Object.keys(params)) {
      const w = params[name];
      const g = grads[name];
      if (!this.m.has(name)) {
        this.m.set(name, new Float32Array(w.length));
        this.v.set(name, new Float32Array(w.length));
      }
      const m = this.m.get(name)!;
      const v = this.v.get(name)!;
      for (let i = 0; i < w.length; i++) {
        const gi = g[i];
        const mi = h.beta1 * m[i] + (1 - h.beta1) * gi;
        const vi = h.beta2 * v[i] + (1 - h.beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] * decay - (stepSize * mi) / (Math.sqrt(vi) / sqrtBc2 + h.eps);
      }
    }
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
