// attention on CUDA: the flash forward, dQ and dK/dV kernels on Hopper's warpgroup products (INSTILL_CUDA_NEXT
// `flash_wgmma`, `dq_wgmma`, `dkv_wgmma`, waiting for a GPU run). The lean forward (attention_lean.cu)
// issues each key tile's two products as mma.sync, 64 of them and 32 ldmatrix a warp and tile, beside the softmax's ~150
// instructions, from the same four schedulers: its loop is bound by issue (stop 16's SASS counts), at ~115 TFLOPS a
// 1B layer where cuDNN's forward runs ~170 (run 17). Here the CTA (one warpgroup: 4 warps, 64 queries, as the lean
// kernel's) computes S = Q·Kᵀ as D / 16 wgmma m64n64k16 and O += P·V as 4 wgmma m64nDk16: 8 to 12 instructions a
// tile where the lean loop had 96, at the tensor cores' wgmma rate (mma.sync reaches ~2/3 of it on Hopper). The dQ
// kernel likewise: S and dP in one batch, dQ += dS·K in another (144 mma.sync and ldmatrix a warp and tile in the
// lean kernel); and the dK/dV kernel (64 keys a CTA): Sᵀ and dPᵀ in one batch, dV += Pᵀ·dO and dK += dSᵀ·Q in another
// (192 in the lean kernel).
//   - Q and dO (K and V in the dK/dV kernel): loaded once as the lean kernels do, as A fragments (registers; the
//     dK/dV kernel reads them again each tile, as the lean one does); P and dS likewise, from S's fragments
//     (a_from_c), so every product takes A from registers and B from shared memory (wgmma.cuh).
//   - K and V tiles (Q and dO in the dK/dV kernel; rows = keys or queries, every dim): loaded with cp.async from the
//     (N, heads, D) tensors into wgmma's 128-byte swizzle (stop 34; wgmma.cuh, load_tile below), double-buffered, the
//     next loading while the current one computes, as the lean kernels'. One tile serves both products: K-major as the
//     first product's B (S = Q·Kᵀ: n = keys, k = dims) and MN-major as the second's (O += P·V: k = keys, n = dims).
//     Before stop 34 the tiles were wgmma's no-swizzle core matrices, and the second products read transposed copies
//     (Vᵀ, Kᵀ, Qᵀ, dOᵀ, a kernel a call) or, with the `wgmma_mn` piece, the same tiles MN-major. Runs 20–21 measured
//     those slower than the lean kernels, with ~2.5x the lean kernels' L2 work (Nsight Compute): 8 threads filled one
//     core matrix from 8 rows 1 KiB apart, so each warp's request touched 8 lines, half each. Here 8 threads copy one
//     row's whole 128 bytes, and the XOR keeps the shared-memory stores free of bank conflicts.
//     test/cuda_host/wgmma_layout.test.ts replays the tile loads and every descriptor below with their own index
//     arithmetic and checks each product's B slice without a GPU (a change to those indices goes there too);
//     test/cuda/wgmma_probe.cu runs the swizzled products alone on a GPU.
//   - Key tiles start at the CTA's first visible key, as the lean kernels'; keys before a row's own first one are masked.
//   - The arithmetic between the products is the lean kernels' (attention_lean.cuh's fwd_softmax, dq_ds, dkv_p_ds),
//     per warp, on the same fragments; a warp with nothing to see in a tile still takes part in its products (a wgmma
//     is the whole warpgroup's) with P (dS) = 0.
// Results: the lean kernels' arithmetic on the same bf16 operands (the products' f32 sums may add in another order),
// checked against float64, the lean kernels and the CPU by test/cuda/next/flash_wgmma.test.ts, dq_wgmma.test.ts and
// dkv_wgmma.test.ts. Taken where attention_wgmma_takes(_dq, _dkv) say: compute capability 9.0, the pipelined kinds
// (bf16 activations or bf16 copies), the lean kernels' conditions (D 64 or 128, scale > 0), and D 64 for the
// backward's (registers: 218 and 238 at D 64).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cuda/attention_flash.cuh"
#include "cuda/attention_kernels.cuh"
#include "cuda/attention_lean.cuh"
#include "cuda/common.cuh"
#include "cuda/wgmma.cuh"

namespace instill {
namespace cuda {

namespace {

constexpr int kBN = 64;  // keys a tile

// A tile: rows ts .. ts + 63 (tokens) of head g of an (N, heads, D) bf16 tensor (K, V, Q or dO), every dim, in wgmma's
// 128-byte swizzle (wgmma.cuh): D / 64 blocks of 64 rows × 128 bytes (block b: dims 64b .. 64b + 63), 16-byte chunk c of
// row r at byte r·128 + ((c ^ r) mod 8)·16 of its block. The tile's base is 1024-aligned (smem_base). Rows past N zeros.
// Each D / 8 consecutive threads copy one row's D·2 contiguous bytes (whole 128-byte lines, as the lean kernels'
// TileRows), and the XOR puts a row's 8 chunks of a block in 8 different 16-byte bank groups: no conflicts either way.
constexpr int kBlock = kBN * 64;  // elements of a 64-dim block of a tile (8192 bytes)

__host__ __device__ constexpr int sw_offset(int r, int c) { return (c / 8) * kBlock + r * 64 + ((c ^ r) & 7) * 8; }

template <int D>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int64_t ts, int64_t N, int64_t heads, int64_t g) {
  constexpr int kChunks = D / 8;
#pragma unroll
  for (int it = 0; it < kBN * kChunks / kThreads; ++it) {
    const int idx = it * kThreads + static_cast<int>(threadIdx.x);
    const int r = idx / kChunks, c = idx % kChunks;
    const int64_t t = ts + r;
    const bool valid = t < N;
    cp_async16(dst + sw_offset(r, c), valid ? src + (t * heads + g) * D + c * 8 : src, valid);
  }
}

// The descriptors of k-slice kk of a tile as a product's B (wgmma.cuh's 128-byte swizzle):
//   first products (S = Q·Kᵀ, dP = dO·Vᵀ, Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ): K-major, n = the tile's 64 rows, k = 16 of their
//   dims: slice kk is 32·(kk mod 4) bytes into the rows of block kk / 4; SBO 1024 (8 rows), LBO unused;
//   second products (O += P·V, dQ += dS·K, dK += dSᵀ·Q, dV += Pᵀ·dO): MN-major (wgmma's transposed B), k = 16 of the
//   tile's rows, n = their D dims: slice kk starts at row 16kk; SBO 1024 (8 rows), LBO 8192 (the next 64 dims).
// test/cuda_host/wgmma_layout.test.ts replays load_tile and these with their own arithmetic.
__device__ __forceinline__ uint64_t first_desc(const bf16* tile, int kk) {
  return wg_desc_sw128(tile + (kk / 4) * kBlock + (kk % 4) * 16, 16, 1024);
}
__device__ __forceinline__ uint64_t second_desc(const bf16* tile, int kk) {
  return wg_desc_sw128(tile + kk * 16 * 64, 2 * kBlock, 1024);
}

// Values made here, not moved by the compiler past the next volatile asm (a product's issue): the registers a batch of
// products reads are all written before its first is issued (ptxas serializes the batch otherwise: C7513).
template <int K>
__device__ __forceinline__ void pin(uint64_t (&v)[K]) {
#pragma unroll
  for (int i = 0; i < K; ++i) asm volatile("" : "+l"(v[i]));
}
__device__ __forceinline__ void pin(uint32_t (&v)[4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) asm volatile("" : "+r"(v[i]));
}

// The dynamic shared memory, its start rounded up to 1024 bytes (the swizzle's atoms; the host asks for kAlignSlack more).
// The kernels declare it __align__(128), not 1024: with 1024 the compiler may take the rounding for 0 and drop it.
constexpr size_t kAlignSlack = 1024;
__device__ __forceinline__ unsigned char* smem_base(unsigned char* raw) {
  return raw + ((1024u - (smem_addr(raw) & 1023u)) & 1023u);
}

// A key (query) tile's C fragments (8 n-tiles of the warp's 16 rows: P, dS, Pᵀ or dSᵀ) as a second product's A
// fragments (bf16), 16 columns a k-slice.
__device__ __forceinline__ void a_frags(const float (&c)[kBN / 8][4], uint32_t (&a)[kBN / 16][4]) {
#pragma unroll
  for (int kk = 0; kk < kBN / 16; ++kk) {
    const AFrag f = a_from_c(c[2 * kk], c[2 * kk + 1]);
    a[kk][0] = f.r[0]; a[kk][1] = f.r[1]; a[kk][2] = f.r[2]; a[kk][3] = f.r[3];
  }
}

// S = Q·Kᵀ over the tile at Kb (D / 16 k-slices of 16 dims).
template <int D>
__device__ __forceinline__ void s_product(float (&s)[kBN / 8][4], const uint32_t (&qf)[D / 16][4], const bf16* Kb) {
  wg_fence();
  wgmma_m64n64k16<false>(s, qf[0], first_desc(Kb, 0));
#pragma unroll
  for (int kk = 1; kk < D / 16; ++kk) wgmma_m64n64k16<true>(s, qf[kk], first_desc(Kb, kk));
  wg_commit();
  wg_wait<0>();
  wg_hold(s);
}

// O += P·V over the V tile at Vb (4 k-slices of 16 keys, read MN-major), P as A fragments (also dQ += dS·K over a K
// tile).
template <int D>
__device__ __forceinline__ void pv_product(float (&o)[D / 8][4], const uint32_t (&pf)[kBN / 16][4], const bf16* Vb) {
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < kBN / 16; ++kk) {
    if constexpr (D == 64) wgmma_m64n64k16<true, true>(o, pf[kk], second_desc(Vb, kk));
    else wgmma_m64n128k16<true, true>(o, pf[kk], second_desc(Vb, kk));
  }
  wg_commit();
  wg_wait<0>();
  wg_hold(o);
}

// The query side of a forward or dQ CTA (64 queries of head h, 16 a warp, the longest rows first, as the lean
// kernels'): its rows, its first key tile (the CTA's first visible key, as the lean kernels'), and this warp's rows
// and the keys they see.
struct QueryCta {
  int64_t h, g, i0, last_i, blo, wi0, wlast, wlo, wlo_max;
  bool warp_live;
  QueryRows rows;  // the thread's rows (attention_lean.cuh)
  __device__ __forceinline__ QueryCta(const AttnParams& p, int warp, int gid) {
    h = blockIdx.y;
    g = h / (p.H / p.KVH);
    i0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * kRows;
    last_i = min(i0 + kRows - 1, p.N - 1);
    blo = key_lo(p.seg_begin, i0, p.window);
    wi0 = i0 + warp * 16;
    warp_live = wi0 < p.N;
    wlast = min(wi0 + 15, p.N - 1);
    wlo = warp_live ? key_lo(p.seg_begin, wi0, p.window) : 0;
    wlo_max = warp_live ? key_lo(p.seg_begin, wlast, p.window) : 0;
    rows = QueryRows(p, wi0, gid);
  }
  // The warp sees nothing in the key tile at ts; it sees every (query, key) pair there.
  __device__ __forceinline__ bool skips(int64_t ts) const { return !warp_live || ts > wlast || ts + kBN - 1 < wlo; }
  __device__ __forceinline__ bool sees_all(int64_t ts) const { return ts + kBN - 1 <= wi0 && ts >= wlo_max; }
  // The masks of the thread's two rows in the key tile at ts (Window: columns relative to ts + 2·tig).
  __device__ __forceinline__ Window mask_a(int64_t ts, int tig) const {
    const int32_t base = static_cast<int32_t>(ts) + 2 * tig;
    return Window{rows.lo_a - base, rows.ia - base};
  }
  __device__ __forceinline__ Window mask_b(int64_t ts, int tig) const {
    const int32_t base = static_cast<int32_t>(ts) + 2 * tig;
    return Window{rows.lo_b - base, rows.ib - base};
  }
};

// CTA = 64 queries of head h (one warpgroup, 16 rows a warp), the longest rows first, as flash_fwd_lean_kernel.
// kIo16: q and the output in bf16 (bf16 activations); else f32 q (rounded as it loads) and f32 out.
// At D 64 (kOverlap) the tensor cores and the softmax overlap, as FlashAttention-3's "intra-warpgroup" pipelining:
// each step issues S_{j+1} = Q·K_{j+1}ᵀ and O += P_j·V_j together, waits for the first, turns S_{j+1} into P_{j+1} while
// P_j·V_j still runs, then waits for that and only then rescales O and makes P_{j+1}'s bf16 fragments (fwd_softmax's
// kDefer: O and P's fragments, the running product's accumulator and A, are written by nothing else until it is done;
// ptxas serializes the products otherwise, its notes C7513 and C7515). The K tiles load one tile ahead of the V tiles
// for it. At D 64 it takes 177 registers as ptxas would have it, 2 CTAs an SM where the one-tile loop's 138 let 3;
// the launch bounds ask for 3 (168 registers, no spills as built). At D 128 (~230 without) it would not fit, and D 128
// keeps one tile at a time.
template <int D, bool kIo16>
__global__ void __launch_bounds__(kThreads, D == 64 ? 3 : 1) flash_fwd_wgmma_kernel(const AttnParams p) {
  pdl_enter();
  static_assert(D == 64 || D == 128, "wgmma N: the head dim");
  constexpr bool kOverlap = D == 64;
  constexpr int S = D + 8, kTile = kBN * D;
  extern __shared__ __align__(128) unsigned char smem_raw[];  // (not 1024: smem_base rounds at run time)
  bf16* const K0 = reinterpret_cast<bf16*>(smem_base(smem_raw));  // two K tiles, then two V tiles (swizzled)
  bf16* const V0 = K0 + 2 * kTile;
  bf16* const Qs = V0 + 2 * kTile;  // (64, S): Q, read once into fragments

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
  const int64_t N = p.N, H = p.H;
  const QueryCta c(p, warp, gid);

  // the first K / V tiles (and with kOverlap the second K tile) load while Q is read
  load_tile<D>(K0, p.k16, c.blo, N, p.KVH, c.g);
  load_tile<D>(V0, p.v16, c.blo, N, p.KVH, c.g);
  if (kOverlap && c.blo + kBN <= c.last_i) load_tile<D>(K0 + kTile, p.k16, c.blo + kBN, N, p.KVH, c.g);
  cp_async_commit();
  load_rows_once<D, kRows, kIo16>(Qs, p.q, kIo16 ? p.q16 : nullptr, c.i0, N, H, c.h);
  __syncthreads();
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) ldsm_x4(smem_addr(Qs + warp * 16 * S + kk * 16 + lds_a<S>(lane)), qf[kk]);

  float o[D / 8][4];
  FwdRows acc;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  acc.m_a = acc.m_b = -INFINITY;
  acc.l_a = acc.l_b = 0.f;
  const float sl2 = p.scale * kLog2e;

  // The key tile at ts: its S (C fragments) turned into P in place (0 where the warp sees nothing), the running max
  // and sums updated, and O rescaled (kDefer: O's factors returned instead).
  const auto softmax = [&](auto defer, float (&s)[kBN / 8][4], int64_t ts) {
    constexpr bool kDefer = decltype(defer)::value;
    if (c.skips(ts)) {  // nothing here for this warp: P = 0
#pragma unroll
      for (int n = 0; n < kBN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
      return Rescale{false, 1.f, 1.f};
    }
    Rescale r{false, 1.f, 1.f};
    if (c.sees_all(ts)) fwd_softmax<D, kBN, false, kDefer>(s, o, acc, sl2, Window{0, 0}, Window{0, 0}, &r);
    else fwd_softmax<D, kBN, true, kDefer>(s, o, acc, sl2, c.mask_a(ts, tig), c.mask_b(ts, tig), &r);
    return r;
  };
  using Now = std::false_type;
  using Deferred = std::true_type;

  if constexpr (kOverlap) {
    // Step j (tile j at ts, buffers buf = j mod 2): P_j in pc (O rescaled for it), K_{j+1} and V_j in K buffer buf ^ 1
    // and V buffer buf. It loads K_{j+2} into K buffer buf (S_j, which read it, is done) and V_{j+1} into V buffer
    // buf ^ 1 (P_{j-1}·V_{j-1}, done the step before), issues S_{j+1} into s and O += P_j·V_j, waits for S_{j+1}, turns
    // it into P_{j+1} in place, waits for P_j·V_j, then rescales O for P_{j+1} and makes P_{j+1}'s fragments into pc.
    // Between a batch's issue and its wait nothing but the softmax on s (whose product is done) writes a register a
    // product in flight reads: ptxas builds it without serializing the products (no C7513-C7515 notes).
    float s[kBN / 8][4] = {};  // defined before the products read it (wgmma.cuh)
    uint32_t pc[kBN / 16][4];
    cp_async_wait_all();
    fence_proxy_async();
    __syncthreads();  // K_0, V_0 and K_1 for every thread and for the products
    s_product<D>(s, qf, K0);
    softmax(Now{}, s, c.blo);
    a_frags(s, pc);
    int buf = 0;
    int64_t ts = c.blo;
    for (; ts + kBN <= c.last_i; ts += kBN, buf ^= 1) {  // every tile with one after it
      cp_async_wait_all();
      fence_proxy_async();
      __syncthreads();  // K_{j+1} and V_j landed for everyone; K buffer buf and V buffer buf ^ 1 free
      if (ts + 2 * kBN <= c.last_i) load_tile<D>(K0 + buf * kTile, p.k16, ts + 2 * kBN, N, p.KVH, c.g);
      load_tile<D>(V0 + (buf ^ 1) * kTile, p.v16, ts + kBN, N, p.KVH, c.g);
      cp_async_commit();
      // both batches' descriptors first: nothing but the products between their issue and the waits (C7513)
      uint64_t ds[D / 16], dv[kBN / 16];
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) ds[kk] = first_desc(K0 + (buf ^ 1) * kTile, kk);
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) dv[kk] = second_desc(V0 + buf * kTile, kk);
      pin(ds);
      pin(dv);
      wg_fence();
      wgmma_m64n64k16<false>(s, qf[0], ds[0]);  // S_{j+1}
#pragma unroll
      for (int kk = 1; kk < D / 16; ++kk) wgmma_m64n64k16<true>(s, qf[kk], ds[kk]);
      wg_commit();
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) wgmma_m64n64k16<true, true>(o, pc[kk], dv[kk]);  // O += P_j·V_j
      wg_commit();
      wg_wait<1>();  // S_{j+1} (batches finish in order: all but the newest, P_j·V_j)
      wg_hold(s);
      const Rescale r = softmax(Deferred{}, s, ts + kBN);  // P_{j+1}, in f32 in s
      wg_wait<0>();
      wg_hold(o);
      // after the wait: O (the running product's accumulator) and P's fragments (its A) are the products' until then
      r.apply<D>(o);
      a_frags(s, pc);
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) pin(pc[kk]);
    }
    cp_async_wait_all();  // the last tile: its V
    fence_proxy_async();
    __syncthreads();
    pv_product<D>(o, pc, V0 + buf * kTile);
  } else {
    float s[kBN / 8][4] = {};  // S, then P; defined before the first product reads it (wgmma.cuh)
    int buf = 0;
    for (int64_t ts = c.blo; ts <= c.last_i; ts += kBN, buf ^= 1) {
      cp_async_wait_all();
      fence_proxy_async();
      __syncthreads();  // tile ts in buffer buf for every thread and for the products; buffer buf ^ 1 free
      if (ts + kBN <= c.last_i) {
        load_tile<D>(K0 + (buf ^ 1) * kTile, p.k16, ts + kBN, N, p.KVH, c.g);
        load_tile<D>(V0 + (buf ^ 1) * kTile, p.v16, ts + kBN, N, p.KVH, c.g);
        cp_async_commit();
      }
      s_product<D>(s, qf, K0 + buf * kTile);
      uint32_t pf[kBN / 16][4];
      softmax(Now{}, s, ts);
      a_frags(s, pf);
      pv_product<D>(o, pf, V0 + buf * kTile);
    }
  }
  if (!c.warp_live) return;
  const float la = quad_sum(acc.l_a), lb = quad_sum(acc.l_b);
  const float inv_a = 1.f / la, inv_b = 1.f / lb;
  const int64_t ia = c.rows.ia, ib = c.rows.ib, h = c.h;
  store_rows<D>(kIo16 ? nullptr : p.out, p.out16, kIo16 ? out16_ld(p) : H * D, h, N, ia, ib, o, inv_a, inv_b, tig);
  if (tig == 0) {
    if (ia < N) p.lse[ia * H + h] = (acc.m_a + log2f(la)) * kLn2;
    if (ib < N) p.lse[ib * H + h] = (acc.m_b + log2f(lb)) * kLn2;
  }
}

// CTA = 64 queries of head h (one warpgroup), as flash_dq_lean_kernel<64, 64, kIo16>: S = Q·Kᵀ and dP = dO·Vᵀ as
// 2·D/16 wgmma m64n64k16 in one batch, dS as the lean kernel's (dq_ds), dQ += dS·K as 4 wgmma m64nDk16 on the same K
// tile, read MN-major. Each stage holds a key tile's K and V (swizzled), double-buffered as the forward's.
template <int D, bool kIo16>
__global__ void __launch_bounds__(kThreads) flash_dq_wgmma_kernel(const AttnParams p) {
  pdl_enter();
  static_assert(D == 64, "registers: D 64 only (D 128 keeps the lean dQ kernel)");
  constexpr int S = D + 8, kTile = kBN * D, kStage = 2 * kTile;
  extern __shared__ __align__(128) unsigned char smem_raw[];  // (not 1024: smem_base rounds at run time)
  bf16* const K0 = reinterpret_cast<bf16*>(smem_base(smem_raw));  // two stages of K and V tiles (swizzled)
  bf16* const Qs = K0 + 2 * kStage;                                // (64, S): Q, read once into fragments
  bf16* const Os = Qs + kRows * S;                                 // (64, S): dO, likewise

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
  const int64_t N = p.N, H = p.H;
  const QueryCta c(p, warp, gid);
  const int64_t h = c.h, g = c.g, ia = c.rows.ia, ib = c.rows.ib;
  const float sl2 = p.scale * kLog2e;
  const float lse_a = ia < N ? p.lse_in[ia * H + h] * kLog2e : 0.f, lse_b = ib < N ? p.lse_in[ib * H + h] * kLog2e : 0.f;
  const float dl_a = ia < N ? p.delta[ia * H + h] : 0.f, dl_b = ib < N ? p.delta[ib * H + h] : 0.f;

  auto load_stage = [&](bf16* st, int64_t ts) {
    load_tile<D>(st, p.k16, ts, N, p.KVH, g);
    load_tile<D>(st + kTile, p.v16, ts, N, p.KVH, g);
    cp_async_commit();
  };
  load_stage(K0, c.blo);  // the first key tile loads while Q and dO are read
  load_rows_once<D, kRows, kIo16>(Qs, p.q, kIo16 ? p.q16 : nullptr, c.i0, N, H, h);
  load_rows_once<D, kRows, kIo16>(Os, p.dout, kIo16 ? p.do16 : nullptr, c.i0, N, H, h);
  __syncthreads();
  uint32_t qf[D / 16][4], dof[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    ldsm_x4(smem_addr(Qs + warp * 16 * S + kk * 16 + lds_a<S>(lane)), qf[kk]);
    ldsm_x4(smem_addr(Os + warp * 16 * S + kk * 16 + lds_a<S>(lane)), dof[kk]);
  }

  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

  float s[kBN / 8][4] = {}, dp[kBN / 8][4] = {};  // S, dP, then dS; defined before the first product reads them

  int buf = 0;
  for (int64_t ts = c.blo; ts <= c.last_i; ts += kBN, buf ^= 1) {
    cp_async_wait_all();
    fence_proxy_async();
    __syncthreads();  // stage buf holds tile ts for every thread and for the products; stage buf ^ 1 is free
    if (ts + kBN <= c.last_i) load_stage(K0 + (buf ^ 1) * kStage, ts + kBN);
    const bf16* const st = K0 + buf * kStage;
    wg_fence();
    wgmma_m64n64k16<false>(s, qf[0], first_desc(st, 0));
#pragma unroll
    for (int kk = 1; kk < D / 16; ++kk) wgmma_m64n64k16<true>(s, qf[kk], first_desc(st, kk));
    wgmma_m64n64k16<false>(dp, dof[0], first_desc(st + kTile, 0));
#pragma unroll
    for (int kk = 1; kk < D / 16; ++kk) wgmma_m64n64k16<true>(dp, dof[kk], first_desc(st + kTile, kk));
    wg_commit();
    wg_wait<0>();
    wg_hold(s);
    wg_hold(dp);
    uint32_t af[kBN / 16][4];
    if (c.skips(ts)) {  // nothing here for this warp: dS = 0
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) af[kk][0] = af[kk][1] = af[kk][2] = af[kk][3] = 0u;
    } else {
      if (c.sees_all(ts)) {
        dq_ds<kBN, false>(s, dp, sl2, lse_a, lse_b, dl_a, dl_b, Window{0, 0}, Window{0, 0});
      } else {
        dq_ds<kBN, true>(s, dp, sl2, lse_a, lse_b, dl_a, dl_b, c.mask_a(ts, tig), c.mask_b(ts, tig));
      }
      a_frags(s, af);
    }
    pv_product<D>(acc, af, st);
  }
  if (!c.warp_live) return;
  store_rows<D>(kIo16 ? nullptr : p.dq, p.dq16, H * D, h, N, ia, ib, acc, p.scale, p.scale, tig);
}

// CTA = 64 keys of KV head g (one warpgroup), as flash_dkv_lean_kernel<64, 64, kIo16> (t: where the results go, and
// the query heads a CTA takes): Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ as 2·D/16 wgmma m64n64k16 in one batch (K and V as A
// fragments from shared memory; Q and dO tiles, rows = queries), Pᵀ and dSᵀ as the lean kernel's (dkv_p_ds), then
// dV += Pᵀ·dO and dK += dSᵀ·Q as 2·4 wgmma m64nDk16 in another, on the same dO and Q tiles read MN-major. Each stage
// holds one query tile's Q, dO (swizzled), lse and Δ, double-buffered as the lean kernel's.
template <int D, bool kIo16>
__global__ void __launch_bounds__(kThreads) flash_dkv_wgmma_kernel(const AttnParams p, const DkvTarget t) {
  pdl_enter();
  static_assert(D == 64, "registers: D 64 only (D 128 keeps the lean dK/dV kernel)");
  constexpr int S = D + 8, kTile = kBN * D, kStage = 2 * kTile;
  extern __shared__ __align__(128) unsigned char smem_raw[];  // (not 1024: smem_base rounds at run time)
  bf16* const T0 = reinterpret_cast<bf16*>(smem_base(smem_raw));  // two stages: Q and dO tiles (swizzled)
  bf16* const Ks = T0 + 2 * kStage;                                // (64, S) this CTA's keys, read once into fragments
  bf16* const Vs = Ks + kRows * S;                                 // (64, S) its values, likewise
  float* const L0 = reinterpret_cast<float*>(Vs + kRows * S);      // stage b: lse at L0 + 2·64·b, Δ 64 after

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
  const int64_t N = p.N, H = p.H, rep = H / p.KVH;
  const int64_t u = blockIdx.y, h_begin = u * t.hpc, g = h_begin / rep;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t last_j = min(j0 + kRows - 1, N - 1);
  const int64_t qhi = query_hi(p.seg_end, last_j, p.window);
  const int64_t wj0 = j0 + warp * 16;
  const bool warp_live = wj0 < N;
  const int64_t wlast = min(wj0 + 15, N - 1);
  const int64_t whi_min = warp_live ? query_hi(p.seg_end, wj0, p.window) : -1;
  const int64_t whi = warp_live ? query_hi(p.seg_end, wlast, p.window) : -1;
  const int32_t ja = static_cast<int32_t>(wj0 + gid), jb = ja + 8;
  const int32_t hi_a = ja < N ? static_cast<int32_t>(query_hi(p.seg_end, ja, p.window)) : -1;
  const int32_t hi_b = jb < N ? static_cast<int32_t>(query_hi(p.seg_end, jb, p.window)) : -1;
  const float sl2 = p.scale * kLog2e;
  const int64_t h_end = h_begin + t.hpc;

  // Query tile (hh, ts) into stage b (ts a multiple of 64: j0 and steps of 64); rows past N zeros.
  auto prefetch = [&](int64_t hh, int64_t ts, int b) {
    bf16* const st = T0 + b * kStage;
    load_tile<D>(st, p.q16, ts, N, H, hh);
    load_tile<D>(st + kTile, p.do16, ts, N, H, hh);
    if (threadIdx.x < kBN) {
      const int64_t i = ts + threadIdx.x;
      const bool valid = i < N;
      cp_async4(L0 + 2 * kBN * b + threadIdx.x, valid ? p.lse_in + i * H + hh : p.lse_in, valid);
      cp_async4(L0 + 2 * kBN * b + kBN + threadIdx.x, valid ? p.delta + i * H + hh : p.delta, valid);
    }
    cp_async_commit();
  };
  prefetch(h_begin, j0, 0);  // j0 <= qhi: every key block has a query that sees it
  load_rows_once<D, kRows, kIo16>(Ks, p.k, kIo16 ? p.k16 : nullptr, j0, N, p.KVH, g);
  load_rows_once<D, kRows, kIo16>(Vs, p.v, kIo16 ? p.v16 : nullptr, j0, N, p.KVH, g);
  __syncthreads();

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    dk[n][0] = dk[n][1] = dk[n][2] = dk[n][3] = 0.f;
    dv[n][0] = dv[n][1] = dv[n][2] = dv[n][3] = 0.f;
  }

  float s[kBN / 8][4] = {}, dp[kBN / 8][4] = {};  // Sᵀ, dPᵀ, then Pᵀ, dSᵀ; defined before the first product reads them
  int buf = 0;
  for (int64_t hh = h_begin; hh < h_end; ++hh) {
    for (int64_t ts = j0; ts <= qhi; ts += kBN, buf ^= 1) {
      cp_async_wait_all();
      fence_proxy_async();
      __syncthreads();  // stage buf holds tile (hh, ts) for every thread and the products; stage buf ^ 1 is free
      if (ts + kBN <= qhi) prefetch(hh, ts + kBN, buf ^ 1);
      else if (hh + 1 < h_end) prefetch(hh + 1, j0, buf ^ 1);
      const bf16* const st = T0 + buf * kStage;
      const float* const Ls = L0 + 2 * kBN * buf;
      // K's and V's A fragments, read again each tile as the lean kernel does (held, they would take 32 registers
      // more: 255 and spills)
      uint32_t kf[D / 16][4], vf[D / 16][4];
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        ldsm_x4(smem_addr(Ks + warp * 16 * S + kk * 16 + lds_a<S>(lane)), kf[kk]);
        ldsm_x4(smem_addr(Vs + warp * 16 * S + kk * 16 + lds_a<S>(lane)), vf[kk]);
      }
      wg_fence();
      wgmma_m64n64k16<false>(s, kf[0], first_desc(st, 0));
#pragma unroll
      for (int kk = 1; kk < D / 16; ++kk) wgmma_m64n64k16<true>(s, kf[kk], first_desc(st, kk));
      wgmma_m64n64k16<false>(dp, vf[0], first_desc(st + kTile, 0));
#pragma unroll
      for (int kk = 1; kk < D / 16; ++kk) wgmma_m64n64k16<true>(dp, vf[kk], first_desc(st + kTile, kk));
      wg_commit();
      wg_wait<0>();
      wg_hold(s);
      wg_hold(dp);
      uint32_t pa[kBN / 16][4], da[kBN / 16][4];
      if (!warp_live || ts > whi || ts + kBN - 1 < wj0) {  // nothing here for this warp: Pᵀ = dSᵀ = 0
#pragma unroll
        for (int kk = 0; kk < kBN / 16; ++kk) {
          pa[kk][0] = pa[kk][1] = pa[kk][2] = pa[kk][3] = 0u;
          da[kk][0] = da[kk][1] = da[kk][2] = da[kk][3] = 0u;
        }
      } else {
        if (ts >= wj0 + 15 && ts + kBN - 1 <= whi_min) {  // every (key, query) pair visible
          dkv_p_ds<kBN, false>(s, dp, Ls, Ls + kBN, sl2, Window{0, 0}, Window{0, 0}, tig);
        } else {  // key j sees query i iff j <= i <= hi(j)
          const int32_t base = static_cast<int32_t>(ts) + 2 * tig;
          dkv_p_ds<kBN, true>(s, dp, Ls, Ls + kBN, sl2, Window{ja - base, hi_a - base}, Window{jb - base, hi_b - base}, tig);
        }
        a_frags(s, pa);
        a_frags(dp, da);
      }
      wg_fence();
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk)
        wgmma_m64n64k16<true, true>(dv, pa[kk], second_desc(st + kTile, kk));
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk)
        wgmma_m64n64k16<true, true>(dk, da[kk], second_desc(st, kk));
      wg_commit();
      wg_wait<0>();
      wg_hold(dv);
      wg_hold(dk);
    }
  }
  if (!warp_live) return;
  // bf16 activations not split: dk_out / dv_out null, the results go to p.dk16 / p.dv16 in bf16
  const bool to16 = kIo16 && !t.dk_out;
  store_rows<D>(to16 ? nullptr : t.dk_out, p.dk16, t.out_heads * D, u, N, ja, jb, dk, p.scale, p.scale, tig);
  store_rows<D>(to16 ? nullptr : t.dv_out, p.dv16, to16 ? dv16_ld(p) : t.out_heads * D, u, N, ja, jb, dv, 1.f, 1.f, tig);
}

template <int D, bool kIo16>
void forward_wgmma(const AttnParams& p, cudaStream_t s) {
  const size_t smem = kAlignSlack + 4 * sizeof(bf16) * kBN * D + tile_bytes(D, kRows);  // two K and two V tiles; Q
  allow_smem(flash_fwd_wgmma_kernel<D, kIo16>, smem, "flash_fwd_wgmma_kernel");
  launch("flash_fwd_wgmma_kernel", flash_fwd_wgmma_kernel<D, kIo16>, grid_of(p.N, p.H, kRows), kThreads, smem, s, p);
}

template <bool kIo16>
void dq_wgmma(const AttnParams& p, cudaStream_t s) {
  constexpr int D = 64;
  const size_t smem = kAlignSlack + 4 * sizeof(bf16) * kBN * D + 2 * tile_bytes(D, kRows);  // two stages of K, V; Q, dO
  allow_smem(flash_dq_wgmma_kernel<D, kIo16>, smem, "flash_dq_wgmma_kernel");
  launch("flash_dq_wgmma_kernel", flash_dq_wgmma_kernel<D, kIo16>, grid_of(p.N, p.H, kRows), kThreads, smem, s, p);
}

template <bool kIo16>
void dkv_wgmma(const AttnParams& p, const DkvTarget& t, dim3 grid, cudaStream_t s) {
  constexpr int D = 64;
  // two stages of Q, dO tiles; K, V; two stages of lse, Δ
  const size_t smem = kAlignSlack + 4 * sizeof(bf16) * kBN * D + 2 * tile_bytes(D, kRows) + 4 * sizeof(float) * kBN;
  allow_smem(flash_dkv_wgmma_kernel<D, kIo16>, smem, "flash_dkv_wgmma_kernel");
  launch("flash_dkv_wgmma_kernel", flash_dkv_wgmma_kernel<D, kIo16>, grid, kThreads, smem, s, p, t);
}

}  // namespace

bool attention_wgmma_takes(const AttnParams& p) {
  return attention_lean_takes(p) && p.k16 && p.v16 && (!p.io16 || p.q16) && is_sm90();
}

bool attention_wgmma_takes_dq(const AttnParams& p) {
  return p.D == 64 && attention_wgmma_takes(p) && (!p.io16 || p.do16);
}

bool attention_wgmma_takes_dkv(const AttnParams& p) { return attention_wgmma_takes_dq(p) && p.q16 && p.do16; }

void attention_wgmma_forward(const AttnParams& p, cudaStream_t s) {
  if (!attention_wgmma_takes(p)) fail(ErrorCode::Internal, "attention_wgmma_forward: a problem it does not take");
  const OpPart part("flash kernel, wgmma (next)", Device::CUDA);
  if (p.D == 64) p.io16 ? forward_wgmma<64, true>(p, s) : forward_wgmma<64, false>(p, s);
  else p.io16 ? forward_wgmma<128, true>(p, s) : forward_wgmma<128, false>(p, s);
}

void attention_wgmma_dq(const AttnParams& p, cudaStream_t s) {
  if (!attention_wgmma_takes_dq(p)) fail(ErrorCode::Internal, "attention_wgmma_dq: a problem it does not take");
  const OpPart part("dq kernel, wgmma (next)", Device::CUDA);
  p.io16 ? dq_wgmma<true>(p, s) : dq_wgmma<false>(p, s);
}

void attention_wgmma_dkv(const AttnParams& p, float* dk_out, float* dv_out, int64_t out_heads, int64_t hpc,
                         unsigned grid_x, unsigned grid_y, const char* part_name, cudaStream_t s) {
  if (!attention_wgmma_takes_dkv(p)) fail(ErrorCode::Internal, "attention_wgmma_dkv: a problem it does not take");
  const OpPart part(part_name, Device::CUDA);
  const DkvTarget t{dk_out, dv_out, out_heads, hpc};
  const dim3 grid(grid_x, grid_y);
  p.io16 ? dkv_wgmma<true>(p, t, grid, s) : dkv_wgmma<false>(p, t, grid, s);
}

}  // namespace cuda
}  // namespace instill
