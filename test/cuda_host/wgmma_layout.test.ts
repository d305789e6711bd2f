// A model of native/cuda/attention_wgmma.cu's shared-memory tiles and descriptors, checked without a GPU. The
// kernels hand wgmma its B operands as descriptors over "core matrices" (native/cuda/wgmma.cuh): element (n, k) of a
// product's B sits at byte start + ⌊n/8⌋·SBO + ⌊k/8⌋·LBO + (n mod 8)·16 + (k mod 8)·2, as the PTX ISA describes a
// no-swizzle K-major operand. This replays what the kernels write and where they point, with the kernels' own index
// arithmetic, thread by thread:
//   - transpose_kernel's two phases (a tile's rows through shared memory, then 32-bit words of 8 rows a thread split
//     into two 16-byte runs with __byte_perm),
//   - load_k_core and load_vt_core (which thread's 16-byte chunk lands where),
//   - every descriptor the forward, dQ and dK/dV kernels build (start kk·128 elements, LBO 128, SBO D·16 or 1024;
//     and with `wgmma_mn` the second products' MN-major ones on the untransposed tiles: start kk·16·D, LBO D·16, SBO 128),
// and checks that each k-slice's B, read through its descriptor as the PTX layout says, is the slice of K, V, Q or dO
// (or of their transposes) that the product needs. It checks the index arithmetic, not the hardware: that wgmma
// reads as documented is for test/cuda/next/*_wgmma.test.ts to say on a GPU. A kernel change to any of these indices
// must be made here too.
import { describe, expect, it } from 'vitest';

import { rng, seed } from '../../bench/kernels/reference.js';

const KBN = 64, THREADS = 128;

/** CUDA's __byte_perm(x, y, s): byte i of the result is byte (s >> 4i) & 7 of the 8 bytes y:x (x the low 4). */
function bytePerm(x: number, y: number, sel: number): number {
  let out = 0;
  for (let i = 0; i < 4; i++) {
    const k = (sel >>> (4 * i)) & 7;
    const byte = k < 4 ? (x >>> (8 * k)) & 0xff : (y >>> (8 * (k - 4))) & 0xff;
    out |= byte << (8 * i);
  }
  return out >>> 0;
}

/** transpose_kernel on 16-bit elements (bf16 bit patterns): src (N, heads, D) into (heads, D, npad), zeros past N, as
 * its two phases index: rows into the tile in 16-byte chunks, then 32-bit words of 8 rows a thread, split into two
 * 16-byte runs with __byte_perm (little-endian words: an even element in the low half). */
function transpose(src: Uint16Array, N: number, heads: number, D: number, npad: number): Uint16Array {
  const S = D + 8, dst = new Uint16Array(heads * D * npad).fill(0xffff);
  for (let g = 0; g < heads; g++) {
    for (let t0 = 0; t0 < npad; t0 += KBN) {
      const tile = new Uint16Array(KBN * S).fill(0xffff);
      const words = new Uint32Array(tile.buffer);
      for (let idx = 0; idx < (KBN * D) / 8; idx++) {
        const r = Math.floor(idx / (D / 8)), c = (idx % (D / 8)) * 8;
        for (let e = 0; e < 8; e++) tile[r * S + c + e] = t0 + r < N ? src[((t0 + r) * heads + g) * D + c + e] : 0;
      }
      for (let idx = 0; idx < (D / 2) * (KBN / 8); idx++) {
        const w = idx % (D / 2), c = Math.floor(idx / (D / 2)) * 8;
        const x = Array.from({ length: 8 }, (_, t) => words[(c + t) * (S / 2) + w]);
        const lo = [0, 2, 4, 6].map((t) => bytePerm(x[t], x[t + 1], 0x5410));
        const hi = [0, 2, 4, 6].map((t) => bytePerm(x[t], x[t + 1], 0x7632));
        new Uint32Array(dst.buffer, ((g * D + 2 * w) * npad + t0 + c) * 2, 4).set(lo);
        new Uint32Array(dst.buffer, ((g * D + 2 * w + 1) * npad + t0 + c) * 2, 4).set(hi);
      }
    }
  }
  return dst;
}

/** load_k_core: keys ts .. ts + 63 of head g of src (N, heads, D) into a core-matrix tile (elements). */
function loadKCore(src: Uint16Array, ts: number, N: number, heads: number, g: number, D: number): Float64Array {
  const dst = new Float64Array(KBN * D).fill(NaN);
  for (let it = 0; it < (KBN * D) / 8 / THREADS; it++) {
    for (let tid = 0; tid < THREADS; tid++) {
      const idx = it * THREADS + tid;
      const r = idx & 7, c = (idx >> 3) % (D / 8), grp = Math.floor(idx / D);
      const key = ts + grp * 8 + r, at = (grp * (D / 8) + c) * 64 + r * 8;
      for (let e = 0; e < 8; e++) dst[at + e] = key < N ? src[(key * heads + g) * D + c * 8 + e] : 0;
    }
  }
  return dst;
}

/** load_vt_core: dims 0 .. D − 1, columns ts .. ts + 63 of head g of a transposed copy into a core-matrix tile. */
function loadVtCore(vt: Uint16Array, ts: number, npad: number, g: number, D: number): Float64Array {
  const dst = new Float64Array(D * KBN).fill(NaN);
  for (let it = 0; it < (D * KBN) / 8 / THREADS; it++) {
    for (let tid = 0; tid < THREADS; tid++) {
      const idx = it * THREADS + tid;
      const r = idx & 7, c = (idx >> 3) & 7, grp = idx >> 6;
      const from = (g * D + grp * 8 + r) * npad + ts + c * 8, at = (grp * 8 + c) * 64 + r * 8;
      for (let e = 0; e < 8; e++) dst[at + e] = vt[from + e];
    }
  }
  return dst;
}

/** One k-slice's B (rows x 16) as wgmma reads it through a descriptor (start in elements, LBO and SBO in bytes):
 * K-major (each row's 16 k contiguous in 8-element halves), or with mn MN-major (imm-trans-b, `wgmma_mn`: each k's
 * rows contiguous in 8-element runs), the PTX ISA's canonical no-swizzle layouts. */
function throughDescriptor(smem: Float64Array, start: number, lbo: number, sbo: number, rows: number, mn = false): number[][] {
  return Array.from({ length: rows }, (_, n) => Array.from({ length: 16 }, (_, k) => {
    const inCore = mn ? (k % 8) * 16 + (n % 8) * 2 : (n % 8) * 16 + (k % 8) * 2;
    const byte = start * 2 + Math.floor(n / 8) * sbo + Math.floor(k / 8) * lbo + inCore;
    return smem[byte / 2];
  }));
}

describe('attention_wgmma.cu: tiles and descriptors (index arithmetic, no GPU)', () => {
  it.each([64, 128])('each k-slice of each product reads the slice it needs, D %i', (D) => {
    const N = 150, heads = 3;  // N no multiple of 64: the last tile has rows past N
    const npad = Math.ceil(N / KBN) * KBN;
    const r = rng(seed + D);
    // bf16 bit patterns below 0xff00: never the 0xffff an unwritten element of the model holds
    const X = Uint16Array.from({ length: N * heads * D }, () => Math.floor(r() * 0xff00));
    const x = (t: number, g: number, d: number) => (t < N ? X[(t * heads + g) * D + d] : 0);
    const xt = transpose(X, N, heads, D, npad);
    for (let g = 0; g < heads; g++) {
      for (let d = 0; d < D; d++) {
        for (let t = 0; t < npad; t++) expect(xt[(g * D + d) * npad + t], `transpose: head ${g} dim ${d} token ${t}`).toBe(x(t, g, d));
      }
    }
    let slices = 0;
    for (let ts = 0; ts < npad; ts += KBN) {
      for (let g = 0; g < heads; g++) {
        // S = Q·Kᵀ (forward, dQ), dP = dO·Vᵀ (dQ), Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ (dK/dV): B = the tile's rows by dims; k-slice
        // kk of dims at start kk·128, LBO 128, SBO D·16
        const rowsTile = loadKCore(X, ts, N, heads, g, D);
        for (let kk = 0; kk < D / 16; kk++, slices++) {
          const want = Array.from({ length: KBN }, (_, n) => Array.from({ length: 16 }, (_, k) => x(ts + n, g, 16 * kk + k)));
          expect(throughDescriptor(rowsTile, kk * 128, 128, D * 16, KBN), `first products, ts ${ts} head ${g} slice ${kk}`).toEqual(want);
        }
        // O += P·V (forward), dQ += dS·K, dK += dSᵀ·Q, dV += Pᵀ·dO: B = dims by the tile's rows, from the transposed
        // copy; k-slice kk of rows at start kk·128, LBO 128, SBO 1024
        // wgmma_mn: the same second products on the first products' tile (rows = keys), read MN-major; k-slice kk at
        // start kk·16·D, LBO D·16 (8 keys), SBO 128 (8 dims) (attention_wgmma.cu's second_desc)
        for (let kk = 0; kk < KBN / 16; kk++) {
          const want = Array.from({ length: D }, (_, n) => Array.from({ length: 16 }, (_, k) => x(ts + 16 * kk + k, g, n)));
          expect(throughDescriptor(rowsTile, kk * 16 * D, D * 16, 128, D, true), `second products MN-major, ts ${ts} head ${g} slice ${kk}`).toEqual(want);
        }
        const colsTile = loadVtCore(xt, ts, npad, g, D);
        for (let kk = 0; kk < KBN / 16; kk++, slices++) {
          const want = Array.from({ length: D }, (_, n) => Array.from({ length: 16 }, (_, k) => x(ts + 16 * kk + k, g, n)));
          expect(throughDescriptor(colsTile, kk * 128, 128, 1024, D), `second products, ts ${ts} head ${g} slice ${kk}`).toEqual(want);
        }
      }
    }
    expect(slices).toBe((npad / KBN) * heads * (D / 16 + KBN / 16));  // (and as many MN-major second-product slices)
  });
});
