// LoRA dropout masks, the same function as native/ops/lora_dropout.h (so a mask can be
// rebuilt outside the engine, e.g. by a reference implementation in a test).
//
// The engine derives one seed per lossAndGrads call (`stepSeed`), one per adapted linear
// from it (`linearDropoutSeed`), and keeps element i of that linear's flattened (N, IN)
// input iff dropoutHash(seed, i) >= floor(p · 2³²), scaling kept elements by 1 / (1 − p).

export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export function dropoutHash(seed: number, index: number): number {
  const lo = index >>> 0;
  const hi = Math.floor(index / 4294967296) >>> 0;
  return fmix32(fmix32((Math.imul(lo, 0x9e3779b1) + seed) >>> 0) ^ fmix32((hi + 0x7f4a7c15) >>> 0) ^ seed);
}

/** Seed of the adapted linear `target` (0..6: q, k, v, o, gate, up, down) of `layer`. */
export function linearDropoutSeed(stepSeed: number, layer: number, target: number): number {
  return fmix32((stepSeed ^ Math.imul(layer * 7 + target + 1, 0x85ebca6b)) >>> 0);
}

/** The multiplier of element `index`: 0 (dropped) or 1 / (1 − p) (kept), p rounded to f32 as in the engine. */
export function dropoutMultiplier(seed: number, index: number, p: number): number {
  const pf = Math.fround(p);
  const threshold = Math.floor(pf * 4294967296);
  return dropoutHash(seed, index) >= threshold ? Math.fround(1 / Math.fround(1 - pf)) : 0;
}
