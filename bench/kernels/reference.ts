// Float64 references for the kernels, and the comparison helpers shared by the
// kernel tests (test/kernels/) and the self-check of `instill bench kernels`.
//
// Inputs are fresh random numbers every run; the seed is printed with every
// failure and can be fixed with INSTILL_TEST_SEED to replay a run.

export const seed: number = process.env.INSTILL_TEST_SEED
  ? Number(process.env.INSTILL_TEST_SEED)
  : Math.floor(Math.random() * 2 ** 31);

/** mulberry32: small, fast, seedable. */
export function rng(s: number): () => number {
  let a = s >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform in [-scale, scale), rounded to float32 so the reference sees exactly what the kernel sees. */
export function randn(rand: () => number, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rand() * 2 - 1) * scale;
  return out;
}

/** Round float32 values to bfloat16 (nearest even), returned as float32. */
export function roundBf16(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  const u = new Uint32Array(out.buffer);
  const src = new Uint32Array(x.buffer, x.byteOffset, x.length);
  for (let i = 0; i < x.length; i++) {
    const bits = src[i];
    const rounded = (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 0;
    u[i] = rounded & 0xffff0000;
  }
  return out;
}

/** C (m, n) = A (m, k) · B (k, n) in float64; each operand given with its own accessor. */
export function matmul64(
  m: number,
  n: number,
  k: number,
  a: (i: number, kk: number) => number,
  b: (kk: number, j: number) => number,
): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let kk = 0; kk < k; kk++) s += a(i, kk) * b(kk, j);
      out[i * n + j] = s;
    }
  return out;
}

export interface LoraRef {
  y: Float64Array;
  u: Float64Array;
}

/** y = x·wᵀ + bias + s·(x·aᵀ)·bᵀ in float64. */
export function loraLinear64(
  x: ArrayLike<number>, w: ArrayLike<number>, bias: ArrayLike<number> | null, a: ArrayLike<number>,
  b: ArrayLike<number>, s: number, n: number, inF: number, outF: number, r: number,
): LoraRef {
  const u = matmul64(n, r, inF, (i, k) => x[i * inF + k], (k, j) => a[j * inF + k]);
  const y = matmul64(n, outF, inF, (i, k) => x[i * inF + k], (k, j) => w[j * inF + k]);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < outF; j++) {
      let t = 0;
      for (let q = 0; q < r; q++) t += u[i * r + q] * b[j * r + q];
      y[i * outF + j] += s * t + (bias ? bias[j] : 0);
    }
  return { y, u };
}

/** dx = dy·w + s·(dy·b)·a ; da = s·(dy·b)ᵀ·x ; db = s·dyᵀ·(x·aᵀ), in float64. */
export function loraLinearBackward64(
  dy: ArrayLike<number>, x: ArrayLike<number>, w: ArrayLike<number>, a: ArrayLike<number>, b: ArrayLike<number>,
  s: number, n: number, inF: number, outF: number, r: number,
): { dx: Float64Array; da: Float64Array; db: Float64Array } {
  const g = matmul64(n, r, outF, (i, k) => dy[i * outF + k], (k, j) => b[k * r + j]);
  const u = matmul64(n, r, inF, (i, k) => x[i * inF + k], (k, j) => a[j * inF + k]);
  const dx = matmul64(n, inF, outF, (i, k) => dy[i * outF + k], (k, j) => w[k * inF + j]);
  const ga = matmul64(n, inF, r, (i, k) => g[i * r + k], (k, j) => a[k * inF + j]);
  for (let i = 0; i < dx.length; i++) dx[i] += s * ga[i];
  const da = matmul64(r, inF, n, (i, k) => s * g[k * r + i], (k, j) => x[k * inF + j]);
  const db = matmul64(outF, r, n, (i, k) => s * dy[k * outF + i], (k, j) => u[k * r + j]);
  return { dx, da, db };
}

/** Masked mean cross-entropy and its gradient in float64. */
export function crossEntropy64(
  logits: ArrayLike<number>, targets: ArrayLike<number>, n: number, v: number, ignore = -100, normalizer = 0,
): { loss: number; count: number; dlogits: Float64Array } {
  let count = 0;
  for (let i = 0; i < n; i++) if (targets[i] !== ignore) count++;
  const norm = normalizer > 0 ? normalizer : count;
  const d = new Float64Array(n * v);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const t = targets[i];
    if (t === ignore) continue;
    let mx = -Infinity;
    for (let j = 0; j < v; j++) mx = Math.max(mx, logits[i * v + j]);
    let sum = 0;
    for (let j = 0; j < v; j++) sum += Math.exp(logits[i * v + j] - mx);
    const lse = mx + Math.log(sum);
    total += lse - logits[i * v + t];
    for (let j = 0; j < v; j++) d[i * v + j] = Math.exp(logits[i * v + j] - lse) / norm;
    d[i * v + t] -= 1 / norm;
  }
  return { loss: count ? total / norm : 0, count, dlogits: d };
}

/** loss, dh, dw of the unfused computation in float64: logits = h·wᵀ, then masked CE. */
export function linearCrossEntropy64(
  h: ArrayLike<number>, w: ArrayLike<number>, targets: Int32Array, n: number, c: number, v: number,
): { loss: number; count: number; dh: Float64Array; dw: Float64Array } {
  const logits = matmul64(n, v, c, (i, k) => h[i * c + k], (k, j) => w[j * c + k]);
  const ce = crossEntropy64(logits, targets, n, v);
  const dh = matmul64(n, c, v, (i, k) => ce.dlogits[i * v + k], (k, j) => w[k * c + j]);
  const dw = matmul64(v, c, n, (i, k) => ce.dlogits[k * v + i], (k, j) => h[k * c + j]);
  return { loss: ce.loss, count: ce.count, dh, dw };
}

/** max |got - ref| / max |ref|: the normwise relative error used throughout the kernel tests. */
export function relError(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (got.length !== ref.length) throw new Error(`length ${got.length} != ${ref.length}`);
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i] - ref[i]);
    if (!(d <= maxDiff)) maxDiff = Number.isNaN(d) ? Infinity : d;
    maxRef = Math.max(maxRef, Math.abs(ref[i]));
  }
  return maxRef === 0 ? maxDiff : maxDiff / maxRef;
}

/** True when every element is finite (a poisoned, unwritten output is NaN). */
export function allFinite(x: ArrayLike<number>): boolean {
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) return false;
  return true;
}
