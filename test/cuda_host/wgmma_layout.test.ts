// A model of native/cuda/attention_wgmma.cu's shared-memory tiles and descriptors, checked without a GPU. Since stop
// 34 the kernels keep every K, V, Q and dO tile in wgmma's 128-byte swizzle (native/cuda/wgmma.cuh's header comment)
// and hand wgmma each product's B as a descriptor over it. This replays, with the kernels' own index arithmetic:
//   - load_tile, thread by thread: which thread copies which 16 bytes of global memory to which shared-memory bytes
//     (sw_offset: D / 64 blocks of 64 rows × 128 bytes, chunk c of row r at ((c ^ r) mod 8)·16 of the row);
//   - first_desc and second_desc: each k-slice's start, LBO and SBO, read through the PTX ISA's canonical layouts
//     before the swizzle (K-major ((8,m),(T,2k)):((8T,SBO),(1,T)); MN-major ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)), T = 8
//     bf16) and then the swizzle the hardware applies to the address (bits 4-6 ^= bits 7-9, the tile 1024-aligned),
// and checks that each k-slice's B is the slice of K, V, Q or dO that the product needs: the first products (S = Q·Kᵀ
// ...: n = the tile's rows, k = 16 dims) and the second (O += P·V ...: k = 16 of the rows, n = the D dims). Also that
// load_tile's copies are whole 128-byte lines of global memory a group of 8 threads and hit 8 different 16-byte bank
// groups of shared memory a group (cp.async's 16-byte stores go 8 threads at a time). It checks the index arithmetic,
// not the hardware: that wgmma reads as documented is test/cuda/wgmma_probe.cu's to say on a GPU, and the pieces'
// results test/cuda/next/*_wgmma.test.ts's. A kernel change to any of these indices must be made here too.
import { describe, expect, it } from 'vitest';

import { rng, seed } from '../../bench/kernels/reference.js';

const KBN = 64, THREADS = 128, BLOCK = KBN * 64;  // rows a tile; threads a CTA; elements of a 64-dim block

/** attention_wgmma.cu's sw_offset: element offset of chunk c (8 dims) of row r in a tile. */
const swOffset = (r: number, c: number) => Math.floor(c / 8) * BLOCK + r * 64 + ((c ^ r) & 7) * 8;

/** The swizzle the hardware applies to a byte address measured from a 1024-aligned base. */
const swizzle = (a: number) => a ^ (((a >> 7) & 7) << 4);

interface Copy { tid: number; it: number; from: number; to: number; valid: boolean }

/** load_tile: rows ts .. ts + 63 of head g of src (N, heads, D) into a swizzled tile (elements; NaN where nothing
 * lands); also each copy, for the access checks. */
function loadTile(src: Uint16Array, ts: number, N: number, heads: number, g: number, D: number) {
  const tile = new Float64Array(KBN * D).fill(NaN), copies: Copy[] = [];
  const chunks = D / 8;
  for (let it = 0; it < (KBN * chunks) / THREADS; it++) {
    for (let tid = 0; tid < THREADS; tid++) {
      const idx = it * THREADS + tid, r = Math.floor(idx / chunks), c = idx % chunks;
      const t = ts + r, valid = t < N, from = (t * heads + g) * D + c * 8, to = swOffset(r, c);
      copies.push({ tid, it, from, to, valid });
      for (let e = 0; e < 8; e++) {
        expect(Number.isNaN(tile[to + e]), `tile element ${to + e} written twice`).toBe(true);
        tile[to + e] = valid ? src[from + e] : 0;  // cp.async with src-size 0 fills zeros
      }
    }
  }
  return { tile, copies };
}

/** first_desc: k-slice kk of a tile as K-major B (n = the 64 rows, k = 16 dims), read through the swizzle. */
function firstSlice(tile: Float64Array, kk: number): number[][] {
  const start = (Math.floor(kk / 4) * BLOCK + (kk % 4) * 16) * 2, sbo = 1024;  // bytes, as wg_desc_sw128's
  return Array.from({ length: KBN }, (_, n) => Array.from({ length: 16 }, (_, k) =>
    tile[swizzle(start + Math.floor(n / 8) * sbo + (n % 8) * 128 + k * 2) / 2]));
}

/** second_desc: k-slice kk of a tile as MN-major B (k = rows 16kk .. 16kk + 15, n = the D dims), through the swizzle. */
function secondSlice(tile: Float64Array, kk: number, D: number): number[][] {
  const start = kk * 16 * 64 * 2, lbo = BLOCK * 2, sbo = 1024;  // bytes: LBO 8192 (the next 64 dims)
  return Array.from({ length: D }, (_, n) => Array.from({ length: 16 }, (_, k) =>
    tile[swizzle(start + Math.floor(n / 64) * lbo + (n % 64) * 2 + (k % 8) * 128 + Math.floor(k / 8) * sbo) / 2]));
}

describe('attention_wgmma.cu: swizzled tiles and descriptors (index arithmetic, no GPU)', () => {
  it.each([64, 128])('each k-slice of each product reads the slice it needs, D %i', (D) => {
    const N = 150, heads = 3;  // N no multiple of 64: the last tile has rows past N
    const r = rng(seed + D);
    // bf16 bit patterns below 0xff00, so that no element is 0 (a zero-filled row past N is told from a real one)
    const X = Uint16Array.from({ length: N * heads * D }, () => 1 + Math.floor(r() * 0xfe00));
    const x = (t: number, g: number, d: number) => (t < N ? X[(t * heads + g) * D + d] : 0);
    let slices = 0;
    // tiles starting anywhere (the kernels' first key tile is the CTA's first visible key, not a multiple of 64)
    for (const ts of [0, 7, 64, 100, 128]) {
      for (let g = 0; g < heads; g++) {
        const { tile } = loadTile(X, ts, N, heads, g, D);
        expect(tile.every((v) => !Number.isNaN(v)), `ts ${ts} head ${g}: every element of the tile written`).toBe(true);
        for (let kk = 0; kk < D / 16; kk++, slices++) {
          const want = Array.from({ length: KBN }, (_, n) => Array.from({ length: 16 }, (_, k) => x(ts + n, g, 16 * kk + k)));
          expect(firstSlice(tile, kk), `first products (K-major), ts ${ts} head ${g} slice ${kk}`).toEqual(want);
        }
        for (let kk = 0; kk < KBN / 16; kk++, slices++) {
          const want = Array.from({ length: D }, (_, n) => Array.from({ length: 16 }, (_, k) => x(ts + 16 * kk + k, g, n)));
          expect(secondSlice(tile, kk, D), `second products (MN-major), ts ${ts} head ${g} slice ${kk}`).toEqual(want);
        }
      }
    }
    expect(slices).toBe(5 * heads * (D / 16 + KBN / 16));
  });

  it.each([64, 128])('load_tile: whole 128-byte lines a group of 8 threads, no shared-memory bank conflicts, D %i', (D) => {
    const N = 1000, heads = 8;
    const { copies } = loadTile(new Uint16Array(N * heads * D), 64, N, heads, 5, D);
    // cp.async's 16-byte copies go in phases of 8 threads: threads 8p .. 8p + 7 of a warp, one instruction (it)
    for (let i = 0; i < copies.length; i += 8) {
      const group = copies.slice(i, i + 8);
      expect(new Set(group.map((c) => c.it)).size).toBe(1);
      expect(Math.floor(group[0].tid / 8) * 8).toBe(group[0].tid);
      const lines = new Set(group.map((c) => Math.floor((c.from * 2) / 128)));
      const bytes = group.map((c) => c.from * 2).sort((a, b) => a - b);
      expect(lines.size, `copies ${i}..${i + 7}: one line of global memory`).toBe(1);
      expect(bytes[7] - bytes[0], `copies ${i}..${i + 7}: the line whole`).toBe(112);
      const banks = new Set(group.map((c) => ((c.to * 2) >> 4) & 7));  // 16-byte groups of the 128-byte bank row
      expect(banks.size, `copies ${i}..${i + 7}: 8 different bank groups`).toBe(8);
    }
  });

  it('the swizzle is a permutation within each 1024-byte atom, as the kernels\' tile bases (1024-aligned) need', () => {
    for (let atom = 0; atom < 4; atom++) {
      const seen = new Set<number>();
      for (let a = atom * 1024; a < (atom + 1) * 1024; a += 16) {
        const p = swizzle(a);
        expect(Math.floor(p / 1024)).toBe(atom);
        expect(Math.floor(p / 128)).toBe(Math.floor(a / 128));  // rows stay rows: only the 16-byte chunks move
        seen.add(p);
      }
      expect(seen.size).toBe(64);
    }
  });
});
