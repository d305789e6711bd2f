// Seeded, reproducible randomness for the data pipeline.
//
// One 32-bit seed and a stream index (the epoch, or a purpose tag) give a PRNG (mulberry32 over a
// splitmix32-mixed state), so the same (seed, stream) always gives the same numbers on every machine and
// Node version: the order of the data never depends on Math.random, the number of examples seen, or time.

/** splitmix32 finaliser: a well-mixed 32-bit value of x. */
function mix32(x: number): number {
  let z = (x + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** A PRNG (uniform in [0, 1)) for stream `stream` of `seed`. */
export function seededRandom(seed: number, stream = 0): () => number {
  let state = mix32((mix32(seed >>> 0) ^ Math.imul(stream + 1, 0x27d4eb2d)) >>> 0);
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fisher-Yates shuffle of `items` in place, with `random`. */
export function shuffleInPlace<T extends { length: number; [i: number]: unknown }>(items: T, random: () => number): T {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const tmp = items[i];
    items[i] = items[j];
    items[j] = tmp;
  }
  return items;
}

/** A seeded permutation of 0..n-1 (stream = the epoch, for a new order each epoch). */
export function seededPermutation(n: number, seed: number, stream = 0): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  return shuffleInPlace(p, seededRandom(seed, stream));
}
