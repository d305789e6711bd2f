// attention on CUDA: the flash forward, dQ and dK/dV kernels on Hopper's warpgroup products (INSTILL_CUDA_NEXT
// `flash_wgmma`, `dq_wgmma`, `dkv_wgmma`, and `wgmma_mn`, waiting for a GPU run). The lean forward (attention_lean.cu)
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
//   - K (and V) tiles: B of S (of dP) (rows = keys, k = dims) in core matrices, loaded with cp.async from the
//     (N, KVH, D) tensors.
//   - B of P·V (rows = dims, k = keys) needs keys contiguous: a transposed copy Vᵀ (KVH, D, N rounded up to 64,
//     zeros past N) is made first, one small kernel a call (~2 MB a 1B layer), and its tiles are loaded like K's;
//     dQ's dS·K reads a Kᵀ made the same way, and dK/dV's dSᵀ·Q and Pᵀ·dO read Qᵀ and dOᵀ (8 MB each a 1B layer).
//     With INSTILL_CUDA_NEXT `wgmma_mn` (kMN) no copy is made: the second products read the tiles the first products
//     read (V, K, Q, dO; rows = keys or queries) as MN-major operands, wgmma's transposed B (wgmma.cuh).
//     test/cuda_host/wgmma_layout.test.ts replays the copies, the tile loads and every descriptor below with their
//     own index arithmetic and checks each product's B slice without a GPU (a change to those indices goes there too).
//   - Key tiles start at multiples of 64 (the copies' 16-byte runs), keys before a row's first visible one masked;
//     double-buffered, the next loading while the current one computes, as the lean kernels'.
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

#include "cuda/attention_flash.cuh"
#include "cuda/attention_kernels.cuh"
#include "cuda/attention_lean.cuh"
#include "cuda/common.cuh"
#include "cuda/wgmma.cuh"

namespace instill {
namespace cuda {

namespace {

constexpr int kBN = 64;  // keys a tile

// Transposed copies: rows [t0, t0 + 64) of head g of src (N, heads, D) into dst (heads, D, npad) at columns t0 ..;
// rows past N zeros (Vᵀ for the forward, Kᵀ for dQ, Qᵀ and dOᵀ for dK/dV). CTA = 64 tokens of one head of the
// copy blockIdx.z (one launch makes both of dK/dV's): the rows through shared memory, then 16-byte runs of 8 tokens,
// two a thread.
struct Transpose {
  const bf16* src[2];
  bf16* dst[2];
};
template <int D>
__global__ void __launch_bounds__(kThreads) transpose_kernel(const Transpose job, int64_t N, int64_t heads, int64_t npad) {
  pdl_enter();
  constexpr int S = D + 8;
  __shared__ __align__(16) bf16 tile[kBN * S];
  const bf16* const src = blockIdx.z ? job.src[1] : job.src[0];  // (no indexing by a variable: no local copy)
  bf16* const dst = blockIdx.z ? job.dst[1] : job.dst[0];
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kBN, g = blockIdx.y;
  for (int idx = threadIdx.x; idx < kBN * D / 8; idx += kThreads) {
    const int r = idx / (D / 8), c = idx % (D / 8) * 8;
    uint4 x = make_uint4(0, 0, 0, 0);
    if (t0 + r < N) x = *reinterpret_cast<const uint4*>(src + ((t0 + r) * heads + g) * D + c);
    *reinterpret_cast<uint4*>(tile + r * S + c) = x;
  }
  __syncthreads();
  // A thread takes one 32-bit word of 8 rows (dims 2w, 2w + 1 of tokens c .. c + 7): a warp reads 32 consecutive
  // words of a row at a time (no bank conflicts), and writes two 16-byte runs, dim 2w's and dim 2w + 1's.
  const uint32_t* const words = reinterpret_cast<const uint32_t*>(tile);
  for (int idx = threadIdx.x; idx < D / 2 * (kBN / 8); idx += kThreads) {
    const int w = idx % (D / 2), c = idx / (D / 2) * 8;
    uint32_t x[8];
#pragma unroll
    for (int t = 0; t < 8; ++t) x[t] = words[(c + t) * (S / 2) + w];
    const uint4 lo = make_uint4(__byte_perm(x[0], x[1], 0x5410), __byte_perm(x[2], x[3], 0x5410),
                                __byte_perm(x[4], x[5], 0x5410), __byte_perm(x[6], x[7], 0x5410));
    const uint4 hi = make_uint4(__byte_perm(x[0], x[1], 0x7632), __byte_perm(x[2], x[3], 0x7632),
                                __byte_perm(x[4], x[5], 0x7632), __byte_perm(x[6], x[7], 0x7632));
    *reinterpret_cast<uint4*>(dst + (g * D + 2 * w) * npad + t0 + c) = lo;
    *reinterpret_cast<uint4*>(dst + (g * D + 2 * w + 1) * npad + t0 + c) = hi;
  }
}

// A K tile (keys ts .. ts + 63 of head g of an (N, heads, D) tensor, every dim; also V, Q, dO tiles) into wgmma.cuh's
// core matrices as the B of S = Q·Kᵀ (of dP = dO·Vᵀ, Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ): rows = keys, k = dims. Core matrix
// (key / 8, dim / 8) at ((key / 8)·(D / 8) + dim / 8)·128 bytes, so LBO = 128 and SBO = D·16. Keys past N zeros.
// Each 8 consecutive threads fill one core matrix (128 contiguous bytes).
template <int D>
__device__ __forceinline__ void load_k_core(bf16* dst, const bf16* k16, int64_t ts, int64_t N, int64_t heads, int64_t g) {
#pragma unroll
  for (int it = 0; it < kBN * D / 8 / kThreads; ++it) {
    const int idx = it * kThreads + static_cast<int>(threadIdx.x);
    const int r = idx & 7, c = (idx >> 3) % (D / 8), grp = idx / D;  // D chunks in a group of 8 keys
    const int64_t key = ts + grp * 8 + r;
    const bool valid = key < N;
    cp_async16(dst + (grp * (D / 8) + c) * 64 + r * 8, valid ? k16 + (key * heads + g) * D + c * 8 : k16, valid);
  }
}

// A Vᵀ tile (dims 0 .. D − 1, columns ts .. ts + 63 of head g of a transposed copy, zeros past N up to npad; also
// Kᵀ, Qᵀ, dOᵀ tiles) into core matrices as the B of O += P·V (of dQ += dS·K, dK += dSᵀ·Q, dV += Pᵀ·dO): rows = dims,
// k = keys. Core matrix (dim / 8, key / 8) at ((dim / 8)·8 + key / 8)·128 bytes, so LBO = 128 and SBO = 1024.
template <int D>
__device__ __forceinline__ void load_vt_core(bf16* dst, const bf16* vt, int64_t ts, int64_t npad, int64_t g) {
#pragma unroll
  for (int it = 0; it < D * kBN / 8 / kThreads; ++it) {
    const int idx = it * kThreads + static_cast<int>(threadIdx.x);
    const int r = idx & 7, c = (idx >> 3) & 7, grp = idx >> 6;
    cp_async16(dst + (grp * 8 + c) * 64 + r * 8, vt + (g * D + grp * 8 + r) * npad + ts + c * 8, true);
  }
}

// S = Q·Kᵀ over the tile at Kb (D / 16 k-slices of 16 dims: core matrices 2kk, 2kk + 1 of each key group).
template <int D>
__device__ __forceinline__ void s_product(float (&s)[kBN / 8][4], const uint32_t (&qf)[D / 16][4], const bf16* Kb) {
  wg_fence();
  wgmma_m64n64k16<false>(s, qf[0], wg_desc(Kb, 128, D * 16));
#pragma unroll
  for (int kk = 1; kk < D / 16; ++kk) wgmma_m64n64k16<true>(s, qf[kk], wg_desc(Kb + kk * 128, 128, D * 16));
  wg_commit();
  wg_wait<0>();
  wg_hold(s);
}

// The descriptor of k-slice kk (16 keys, or queries) of a second product's B (O += P·V, dQ += dS·K, dK += dSᵀ·Q,
// dV += Pᵀ·dO): on a tile of the transposed copy (rows = dims, load_vt_core: K-major), or with kMN on the tile of the
// untransposed rows themselves (load_k_core's layout: rows = keys, 8 dims a 16-byte row of a core matrix), read
// MN-major: k groups (8 keys) D·16 bytes apart (LBO), n groups (8 dims) 128 (SBO) (wgmma.cuh).
template <int D, bool kMN>
__device__ __forceinline__ uint64_t second_desc(const bf16* tile, int kk) {
  return kMN ? wg_desc(tile + kk * 16 * D, D * 16, 128) : wg_desc(tile + kk * 128, 128, 1024);
}

// O += P·V over the V tile at Vb (Vᵀ, or V itself with kMN; 4 k-slices of 16 keys), P as A fragments (also
// dQ += dS·K over a K tile).
template <int D, bool kMN>
__device__ __forceinline__ void pv_product(float (&o)[D / 8][4], const uint32_t (&pf)[kBN / 16][4], const bf16* Vb) {
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < kBN / 16; ++kk) {
    if constexpr (D == 64) wgmma_m64n64k16<true, kMN>(o, pf[kk], second_desc<D, kMN>(Vb, kk));
    else wgmma_m64n128k16<true, kMN>(o, pf[kk], second_desc<D, kMN>(Vb, kk));
  }
  wg_commit();
  wg_wait<0>();
  wg_hold(o);
}

// The query side of a forward or dQ CTA (64 queries of head h, 16 a warp, the longest rows first, as the lean
// kernels'): its rows, its first key tile, and this warp's rows and the keys they see. Key tiles start at multiples
// of 64 (the transposed copies' 16-byte runs need it): keys before a row's first visible one are masked, as a
// window's or a segment's start are in the lean kernels.
struct QueryCta {
  int64_t h, g, i0, last_i, blo, wi0, wlast, wlo, wlo_max;
  bool warp_live;
  QueryRows rows;  // the thread's rows (attention_lean.cuh)
  __device__ __forceinline__ QueryCta(const AttnParams& p, int warp, int gid) {
    h = blockIdx.y;
    g = h / (p.H / p.KVH);
    i0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * kRows;
    last_i = min(i0 + kRows - 1, p.N - 1);
    blo = key_lo(p.seg_begin, i0, p.window) / kBN * kBN;
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
// kIo16: q and the output in bf16 (bf16 activations); else f32 q (rounded as it loads) and f32 out. kMN: V tiles of V
// itself, read MN-major (vt unused); else of the transposed copy vt.
template <int D, bool kIo16, bool kMN>
__global__ void __launch_bounds__(kThreads) flash_fwd_wgmma_kernel(const AttnParams p, const bf16* __restrict__ vt,
                                                                   int64_t npad) {
  pdl_enter();
  static_assert(D == 64 || D == 128, "wgmma N: the head dim");
  constexpr int S = D + 8, kTile = kBN * D;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* const Qs = reinterpret_cast<bf16*>(smem_raw);  // (64, S): Q, read once into fragments
  bf16* const K0 = Qs + kRows * S;                     // two K tiles, then two Vᵀ tiles (core matrices)
  bf16* const V0 = K0 + 2 * kTile;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
  const int64_t N = p.N, H = p.H;
  const QueryCta c(p, warp, gid);

  // the first K / Vᵀ tile loads while Q is read
  load_k_core<D>(K0, p.k16, c.blo, N, p.KVH, c.g);
  if constexpr (kMN) load_k_core<D>(V0, p.v16, c.blo, N, p.KVH, c.g);
  else load_vt_core<D>(V0, vt, c.blo, npad, c.g);
  cp_async_commit();
  load_rows_once<D, kRows, kIo16>(Qs, p.q, kIo16 ? p.q16 : nullptr, c.i0, N, H, c.h);  // waits for every group
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
  float s[kBN / 8][4] = {};  // S, then P; defined before the first product reads it (wgmma.cuh)

  int buf = 0;
  for (int64_t ts = c.blo; ts <= c.last_i; ts += kBN, buf ^= 1) {
    cp_async_wait_all();
    fence_proxy_async();
    __syncthreads();  // tile ts in buffer buf for every thread and for the products; buffer buf ^ 1 free
    if (ts + kBN <= c.last_i) {
      load_k_core<D>(K0 + (buf ^ 1) * kTile, p.k16, ts + kBN, N, p.KVH, c.g);
      if constexpr (kMN) load_k_core<D>(V0 + (buf ^ 1) * kTile, p.v16, ts + kBN, N, p.KVH, c.g);
      else load_vt_core<D>(V0 + (buf ^ 1) * kTile, vt, ts + kBN, npad, c.g);
      cp_async_commit();
    }
    s_product<D>(s, qf, K0 + buf * kTile);
    uint32_t pf[kBN / 16][4];
    if (c.skips(ts)) {  // nothing here for this warp: P = 0
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) pf[kk][0] = pf[kk][1] = pf[kk][2] = pf[kk][3] = 0u;
    } else {
      if (c.sees_all(ts)) {
        fwd_softmax<D, kBN, false>(s, o, acc, sl2, Window{0, 0}, Window{0, 0});
      } else {
        fwd_softmax<D, kBN, true>(s, o, acc, sl2, c.mask_a(ts, tig), c.mask_b(ts, tig));
      }
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        const AFrag a = a_from_c(s[2 * kk], s[2 * kk + 1]);
        pf[kk][0] = a.r[0]; pf[kk][1] = a.r[1]; pf[kk][2] = a.r[2]; pf[kk][3] = a.r[3];
      }
    }
    pv_product<D, kMN>(o, pf, V0 + buf * kTile);
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
// 2·D/16 wgmma m64n64k16 in one batch, dS as the lean kernel's (dq_ds), dQ += dS·K as 4 wgmma m64nDk16 on a Kᵀ tile
// (a transposed copy of K, as the forward's Vᵀ; with kMN on the K tile itself, read MN-major). Each buffer holds a key
// tile's K and V (rows = keys) and, without kMN, Kᵀ (rows = dims), double-buffered as the forward's.
template <int D, bool kIo16, bool kMN>
__global__ void __launch_bounds__(kThreads) flash_dq_wgmma_kernel(const AttnParams p, const bf16* __restrict__ kt,
                                                                  int64_t npad) {
  pdl_enter();
  static_assert(D == 64, "registers: D 64 only (D 128 keeps the lean dQ kernel)");
  constexpr int S = D + 8, kTile = kBN * D, kStage = (kMN ? 2 : 3) * kTile;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* const Qs = reinterpret_cast<bf16*>(smem_raw);  // (64, S): Q, read once into fragments
  bf16* const Os = Qs + kRows * S;                     // (64, S): dO, likewise
  bf16* const K0 = Os + kRows * S;                     // two stages of K, V and Kᵀ tiles (core matrices)

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
  const int64_t N = p.N, H = p.H;
  const QueryCta c(p, warp, gid);
  const int64_t h = c.h, g = c.g, ia = c.rows.ia, ib = c.rows.ib;
  const float sl2 = p.scale * kLog2e;
  const float lse_a = ia < N ? p.lse_in[ia * H + h] * kLog2e : 0.f, lse_b = ib < N ? p.lse_in[ib * H + h] * kLog2e : 0.f;
  const float dl_a = ia < N ? p.delta[ia * H + h] : 0.f, dl_b = ib < N ? p.delta[ib * H + h] : 0.f;

  auto load_stage = [&](bf16* st, int64_t ts) {
    load_k_core<D>(st, p.k16, ts, N, p.KVH, g);
    load_k_core<D>(st + kTile, p.v16, ts, N, p.KVH, g);
    if constexpr (!kMN) load_vt_core<D>(st + 2 * kTile, kt, ts, npad, g);
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
    wgmma_m64n64k16<false>(s, qf[0], wg_desc(st, 128, D * 16));
#pragma unroll
    for (int kk = 1; kk < D / 16; ++kk) wgmma_m64n64k16<true>(s, qf[kk], wg_desc(st + kk * 128, 128, D * 16));
    wgmma_m64n64k16<false>(dp, dof[0], wg_desc(st + kTile, 128, D * 16));
#pragma unroll
    for (int kk = 1; kk < D / 16; ++kk) wgmma_m64n64k16<true>(dp, dof[kk], wg_desc(st + kTile + kk * 128, 128, D * 16));
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
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        const AFrag a = a_from_c(s[2 * kk], s[2 * kk + 1]);
        af[kk][0] = a.r[0]; af[kk][1] = a.r[1]; af[kk][2] = a.r[2]; af[kk][3] = a.r[3];
      }
    }
    pv_product<D, kMN>(acc, af, kMN ? st : st + 2 * kTile);
  }
  if (!c.warp_live) return;
  store_rows<D>(kIo16 ? nullptr : p.dq, p.dq16, H * D, h, N, ia, ib, acc, p.scale, p.scale, tig);
}

// CTA = 64 keys of KV head g (one warpgroup), as flash_dkv_lean_kernel<64, 64, kIo16> (t: where the results go, and
// the query heads a CTA takes): Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ as 2·D/16 wgmma m64n64k16 in one batch (K and V as A
// fragments from shared memory; Q and dO tiles, rows = queries), Pᵀ and dSᵀ as the lean kernel's (dkv_p_ds), then dV += Pᵀ·dO and
// dK += dSᵀ·Q as 2·4 wgmma m64nDk16 in another, on dOᵀ and Qᵀ tiles (transposed copies of dO and Q, as the forward's
// Vᵀ; with kMN on the Q and dO tiles themselves, read MN-major). Each buffer holds one query tile's Q, dO, (without
// kMN) Qᵀ, dOᵀ, lse and Δ, double-buffered as the lean kernel's.
template <int D, bool kIo16, bool kMN>
__global__ void __launch_bounds__(kThreads) flash_dkv_wgmma_kernel(const AttnParams p, const DkvTarget t,
                                                                   const bf16* __restrict__ qt,
                                                                   const bf16* __restrict__ dot, int64_t npad) {
  pdl_enter();
  static_assert(D == 64, "registers: D 64 only (D 128 keeps the lean dK/dV kernel)");
  constexpr int S = D + 8, kTile = kBN * D, kStage = (kMN ? 2 : 4) * kTile;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* const Ks = reinterpret_cast<bf16*>(smem_raw);  // (64, S) this CTA's keys, read once into fragments
  bf16* const Vs = Ks + kRows * S;                     // (64, S) its values, likewise
  bf16* const T0 = Vs + kRows * S;                     // two stages: Q, dO, Qᵀ, dOᵀ tiles (core matrices)
  float* const L0 = reinterpret_cast<float*>(T0 + 2 * kStage);  // stage b: lse at L0 + 2·64·b, Δ 64 after

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
    load_k_core<D>(st, p.q16, ts, N, H, hh);
    load_k_core<D>(st + kTile, p.do16, ts, N, H, hh);
    if constexpr (!kMN) {
      load_vt_core<D>(st + 2 * kTile, qt, ts, npad, hh);
      load_vt_core<D>(st + 3 * kTile, dot, ts, npad, hh);
    }
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
      wgmma_m64n64k16<false>(s, kf[0], wg_desc(st, 128, D * 16));
#pragma unroll
      for (int kk = 1; kk < D / 16; ++kk) wgmma_m64n64k16<true>(s, kf[kk], wg_desc(st + kk * 128, 128, D * 16));
      wgmma_m64n64k16<false>(dp, vf[0], wg_desc(st + kTile, 128, D * 16));
#pragma unroll
      for (int kk = 1; kk < D / 16; ++kk) wgmma_m64n64k16<true>(dp, vf[kk], wg_desc(st + kTile + kk * 128, 128, D * 16));
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
#pragma unroll
        for (int kk = 0; kk < kBN / 16; ++kk) {
          const AFrag a = a_from_c(s[2 * kk], s[2 * kk + 1]), b = a_from_c(dp[2 * kk], dp[2 * kk + 1]);
          pa[kk][0] = a.r[0]; pa[kk][1] = a.r[1]; pa[kk][2] = a.r[2]; pa[kk][3] = a.r[3];
          da[kk][0] = b.r[0]; da[kk][1] = b.r[1]; da[kk][2] = b.r[2]; da[kk][3] = b.r[3];
        }
      }
      wg_fence();
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk)
        wgmma_m64n64k16<true, kMN>(dv, pa[kk], second_desc<D, kMN>(kMN ? st + kTile : st + 3 * kTile, kk));
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk)
        wgmma_m64n64k16<true, kMN>(dk, da[kk], second_desc<D, kMN>(kMN ? st : st + 2 * kTile, kk));
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

template <int D, bool kIo16, bool kMN>
void forward_wgmma(const AttnParams& p, const bf16* vt, int64_t npad, cudaStream_t s) {
  const size_t smem = tile_bytes(D, kRows) + 4 * sizeof(bf16) * kBN * D;  // Q; two K and two V (Vᵀ) tiles
  allow_smem(flash_fwd_wgmma_kernel<D, kIo16, kMN>, smem, "flash_fwd_wgmma_kernel");
  launch("flash_fwd_wgmma_kernel", flash_fwd_wgmma_kernel<D, kIo16, kMN>, grid_of(p.N, p.H, kRows), kThreads, smem, s,
         p, vt, npad);
}

template <int D, bool kIo16, bool kMN>
void dq_wgmma(const AttnParams& p, const bf16* kt, int64_t npad, cudaStream_t s) {
  // Q, dO; two stages of K, V (and Kᵀ)
  const size_t smem = 2 * tile_bytes(D, kRows) + 2 * (kMN ? 2 : 3) * sizeof(bf16) * kBN * D;
  allow_smem(flash_dq_wgmma_kernel<D, kIo16, kMN>, smem, "flash_dq_wgmma_kernel");
  launch("flash_dq_wgmma_kernel", flash_dq_wgmma_kernel<D, kIo16, kMN>, grid_of(p.N, p.H, kRows), kThreads, smem, s, p,
         kt, npad);
}

// src (N, heads, D) bf16 transposed into out[0], a new (heads, D, npad) tensor, zeros past N; with src2, src2 into
// out[1] too, in the same launch.
void transposed(const AttnParams& p, int64_t heads, int64_t npad, cudaStream_t s, Tensor (&out)[2], const bf16* src,
                const bf16* src2 = nullptr) {
  Transpose job{{src, src2}, {nullptr, nullptr}};
  const int copies = src2 ? 2 : 1;
  for (int i = 0; i < copies; ++i) {
    out[i] = Tensor::empty({heads, p.D, npad}, DType::BF16, Device::CUDA);  // freed stream-ordered, after its readers
    job.dst[i] = out[i].data_as<bf16>();
  }
  dim3 grid = grid_of(npad, heads, kBN);
  grid.z = static_cast<unsigned>(copies);
  if (p.D == 64) launch("transpose_kernel", transpose_kernel<64>, grid, kThreads, 0, s, job, p.N, heads, npad);
  else launch("transpose_kernel", transpose_kernel<128>, grid, kThreads, 0, s, job, p.N, heads, npad);
}

// What an entry point's second products read (the V, K, Q or dO tiles): with INSTILL_CUDA_NEXT `wgmma_mn` the first
// products' tiles as they are, read MN-major (no copy: null), else transposed copies of src (and src2), `heads` heads
// each, made first in their own op-profile part. The copies live as long as this (freed stream-ordered, after their
// readers).
struct SecondOperands {
  bool mn = false;
  int64_t npad = 0;  // N rounded up to the key tiles
  Tensor copy[2];
  const bf16* at(int i) const { return mn ? nullptr : copy[i].data_as<bf16>(); }
};
SecondOperands second_operands(const AttnParams& p, int64_t heads, const char* part, cudaStream_t s, const bf16* src,
                               const bf16* src2 = nullptr) {
  SecondOperands o;
  o.npad = (p.N + kBN - 1) / kBN * kBN;
  o.mn = next_kernels(Next::WgmmaMn);
  if (!o.mn) {
    const OpPart op(part, Device::CUDA);
    transposed(p, heads, o.npad, s, o.copy, src, src2);
  }
  return o;
}

template <bool kIo16, bool kMN>
void dkv_wgmma(const AttnParams& p, const DkvTarget& t, const bf16* qt, const bf16* dot, int64_t npad, dim3 grid,
               cudaStream_t s) {
  constexpr int D = 64;
  // K, V; two stages of Q, dO (and Qᵀ, dOᵀ) tiles and of lse, Δ
  const size_t smem = 2 * tile_bytes(D, kRows) + 2 * (kMN ? 2 : 4) * sizeof(bf16) * kBN * D + 4 * sizeof(float) * kBN;
  allow_smem(flash_dkv_wgmma_kernel<D, kIo16, kMN>, smem, "flash_dkv_wgmma_kernel");
  launch("flash_dkv_wgmma_kernel", flash_dkv_wgmma_kernel<D, kIo16, kMN>, grid, kThreads, smem, s, p, t, qt, dot, npad);
}

bool is_sm90() { return gpu_properties().cc_major == 9 && gpu_properties().cc_minor == 0; }

}  // namespace

bool attention_wgmma_takes(const AttnParams& p) {
  return attention_lean_takes(p) && p.k16 && p.v16 && (!p.io16 || p.q16) && is_sm90();
}

bool attention_wgmma_takes_dq(const AttnParams& p) {
  return p.D == 64 && attention_wgmma_takes(p) && (!p.io16 || p.do16);
}

bool attention_wgmma_takes_dkv(const AttnParams& p) { return attention_wgmma_takes_dq(p) && p.q16 && p.do16; }

// Each entry point: with INSTILL_CUDA_NEXT `wgmma_mn`, the second products read their tiles MN-major and no
// transposed copy is made; otherwise the copy first, in its own op-profile part.
void attention_wgmma_forward(const AttnParams& p, cudaStream_t s) {
  if (!attention_wgmma_takes(p)) fail(ErrorCode::Internal, "attention_wgmma_forward: a problem it does not take");
  const SecondOperands vt = second_operands(p, p.KVH, "v transposed (wgmma, next)", s, p.v16);
  const bool mn = vt.mn;
  const int64_t npad = vt.npad;
  const bf16* const vtp = vt.at(0);
  const OpPart part(mn ? "flash kernel, wgmma mn (next)" : "flash kernel, wgmma (next)", Device::CUDA);
  if (p.D == 64) {
    if (mn) p.io16 ? forward_wgmma<64, true, true>(p, vtp, npad, s) : forward_wgmma<64, false, true>(p, vtp, npad, s);
    else p.io16 ? forward_wgmma<64, true, false>(p, vtp, npad, s) : forward_wgmma<64, false, false>(p, vtp, npad, s);
  } else {
    if (mn) p.io16 ? forward_wgmma<128, true, true>(p, vtp, npad, s) : forward_wgmma<128, false, true>(p, vtp, npad, s);
    else p.io16 ? forward_wgmma<128, true, false>(p, vtp, npad, s) : forward_wgmma<128, false, false>(p, vtp, npad, s);
  }
}

void attention_wgmma_dq(const AttnParams& p, cudaStream_t s) {
  if (!attention_wgmma_takes_dq(p)) fail(ErrorCode::Internal, "attention_wgmma_dq: a problem it does not take");
  const SecondOperands kt = second_operands(p, p.KVH, "k transposed (wgmma, next)", s, p.k16);
  const bool mn = kt.mn;
  const int64_t npad = kt.npad;
  const bf16* const ktp = kt.at(0);
  const OpPart part(mn ? "dq kernel, wgmma mn (next)" : "dq kernel, wgmma (next)", Device::CUDA);
  if (mn) p.io16 ? dq_wgmma<64, true, true>(p, ktp, npad, s) : dq_wgmma<64, false, true>(p, ktp, npad, s);
  else p.io16 ? dq_wgmma<64, true, false>(p, ktp, npad, s) : dq_wgmma<64, false, false>(p, ktp, npad, s);
}

void attention_wgmma_dkv(const AttnParams& p, float* dk_out, float* dv_out, int64_t out_heads, int64_t hpc,
                         unsigned grid_x, unsigned grid_y, const char* part_name, cudaStream_t s) {
  if (!attention_wgmma_takes_dkv(p)) fail(ErrorCode::Internal, "attention_wgmma_dkv: a problem it does not take");
  const SecondOperands qdo = second_operands(p, p.H, "q, dout transposed (wgmma, next)", s, p.q16, p.do16);  // Qᵀ, dOᵀ
  const bool mn = qdo.mn;
  const int64_t npad = qdo.npad;
  const bf16* const qt = qdo.at(0);
  const bf16* const dot = qdo.at(1);
  const OpPart part(part_name, Device::CUDA);
  const DkvTarget t{dk_out, dv_out, out_heads, hpc};
  const dim3 grid(grid_x, grid_y);
  if (mn) p.io16 ? dkv_wgmma<true, true>(p, t, qt, dot, npad, grid, s) : dkv_wgmma<false, true>(p, t, qt, dot, npad, grid, s);
  else p.io16 ? dkv_wgmma<true, false>(p, t, qt, dot, npad, grid, s) : dkv_wgmma<false, false>(p, t, qt, dot, npad, grid, s);
}

}  // namespace cuda
}  // namespace instill
