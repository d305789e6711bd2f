// attention on CUDA: the flash kernels with a leaner inner loop (INSTILL_CUDA_NEXT `flash_lean`, waiting for a
// GPU run). The same tiles, fragments and products as attention_flash.cu's one-m-tile kernels (its header comment
// has the layouts), with the per-tile instructions the tensor cores wait on cut down. Read from the SASS of
// attention_flash.cu's D = 64 kernels (scripts/sass.sh): of the forward loop's 937 instructions a tile, 64 are
// the tile's mma; the rest issue from the same four schedulers, so at two warps a scheduler the loop is bound by
// issue, not by the tensor cores. What goes:
//   - The mask on tiles that need none. The verified kernels compute `if (!full) mask` per element, and the
//     compiler turns that into a select every element of every tile (predicates from a bit mask, 3 instructions
//     an element). Here the tile's work is a template on kMask and a warp-uniform branch picks one copy: the
//     tiles every pair of a warp sees (all but the diagonal and a segment's first, for causal rows) run none.
//   - exp2f's denormal handling: exp2f(x) is ex2.approx.f32, which ptxas wraps in a compare and two
//     multiplies (results below 2^-126); ex2.approx.ftz.f32 is the one MUFU instruction. A probability
//     below 2^-126 becomes 0 instead of a denormal: nothing a bf16 P or an f32 sum keeps anyway.
//   - The forward's separate scale: the row max is taken on the raw scores and scaled once (scale > 0, so
//     max(s)·c = max(s·c), the same m as the verified kernel), and each P is ex2(fma(s, c, −m)): one FFMA
//     where the verified kernel multiplies, stores, and subtracts.
//   - 64-bit index arithmetic in the masks (token indices fit in 32 bits: cu_seqlens is int32), and the tile
//     loads' per-chunk addressing (each thread's rows of a tile are one offset and a fixed stride: TileRows
//     (attention_flash.cuh) for K / V and Q / dO; lse and Δ one load each for the first BQ threads, not a loop the
//     compiler unrolls with branches).
//   - The forward's rescale of O and the sums on tiles where no row of the warp has a new max (exact: each
//     factor is ex2(0) = 1).
// Results: the forward's are the verified kernel's to rounding (P from one FFMA instead of a multiply and a
// subtraction, then rounded to bf16 like theirs), not its bits. The backward's arithmetic is the verified
// kernels' (the same fma before the exponential, the same mask and products), so on the same forward outputs
// its results are their bits, unless a probability falls below 2^-126 (0 here, a denormal there).
// test/cuda/next/flash_lean.test.ts checks both, and the CPU's reference.
// Paths: the forward on f32 tiles (synchronous), bf16 copies (pipelined: attention.cu's default with this piece)
// or bf16 activations, one m-tile a warp (two, `flash_mt`, measured no faster in runs 14–16: taken out in stop
// 22); the backward pipelined or on bf16 activations (the synchronous backward keeps
// the verified kernels). A scale that is not > 0 and finite keeps the verified kernels (the max-then-scale step
// needs it).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention_flash.cuh"
#include "cuda/attention_kernels.cuh"
#include "cuda/attention_lean.cuh"
#include "cuda/common.cuh"

namespace instill {
namespace cuda {

namespace {

// ---------------------------------------------------------------- forward

template <int D, bool kMask>
__device__ __forceinline__ void fwd_tile(const uint32_t (&qf)[D / 16][4], const bf16* Ks, const bf16* Vs,
                                         float (&o)[D / 8][4], FwdRows& a, float sl2, Window wa, Window wb, int lane) {
  constexpr int S = D + 8, BN = 64;
  float s[BN / 8][4];
#pragma unroll
  for (int n = 0; n < BN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
    for (int nn = 0; nn < BN / 16; ++nn) {
      uint32_t b[4];
      ldsm_x4(smem_addr(Ks + nn * 16 * S + kk * 16 + lds_b_nmajor<S>(lane)), b);
      mma_bf16(s[2 * nn], qf[kk], b[0], b[1]);
      mma_bf16(s[2 * nn + 1], qf[kk], b[2], b[3]);
    }
  }
  fwd_softmax<D, BN, kMask>(s, o, a, sl2, wa, wb);
  // O += P·V: P's C fragments are the A fragments (keys 16kk .. 16kk + 15 as k)
#pragma unroll
  for (int kk = 0; kk < BN / 16; ++kk) mma_kslice_kmajor<D, S>(o, a_from_c(s[2 * kk], s[2 * kk + 1]), Vs + kk * 16 * S, lane);
}

// CTA = 64 queries of head h, 16 a warp, as flash_fwd_kernel<D, kPipe, kIo16>.
template <int D, bool kPipe, bool kIo16>
__global__ void __launch_bounds__(kThreads) flash_fwd_lean_kernel(const AttnParams p) {
  pdl_enter();
  static_assert(!kIo16 || kPipe, "bf16 activations stream K / V from themselves: pipelined");
  constexpr int S = D + 8, BN = 64;
  static_assert(kRows <= 2 * BN, "the Q tile fills the K and V tiles of buffer 0");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* const K0 = reinterpret_cast<bf16*>(smem_raw);  // the Q tile first, then K / V tiles (two of each pipelined)
  bf16* const V0 = K0 + BN * S;
  constexpr int kBuf = kPipe ? 2 * BN * S : 0;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
  const int64_t N = p.N, H = p.H;
  const int64_t h = blockIdx.y, g = h / (H / p.KVH);
  const int64_t i0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * kRows;  // the longest rows first
  const int64_t last_i = min(i0 + kRows - 1, N - 1);
  const int64_t blo = key_lo(p.seg_begin, i0, p.window);
  const int64_t wi0 = i0 + warp * 16;  // this warp's rows wi0 .. wi0 + 15
  const bool warp_live = wi0 < N;
  const int64_t wlast = min(wi0 + 15, N - 1);
  const int64_t wlo = warp_live ? key_lo(p.seg_begin, wi0, p.window) : 0;
  const int64_t wlo_max = warp_live ? key_lo(p.seg_begin, wlast, p.window) : 0;
  const QueryRows rows(p, wi0, gid);  // the thread's rows, kept across the loop (4 registers)

  load_rows_once<D, kRows, kIo16>(K0, p.q, kIo16 ? p.q16 : nullptr, i0, N, H, h);
  __syncthreads();
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) ldsm_x4(smem_addr(K0 + warp * 16 * S + kk * 16 + lds_a<S>(lane)), qf[kk]);
  const TileRows<D, BN> kv;  // the pipelined K / V tiles' copies (kv_first / kv_tile's, from per-thread offsets)
  if constexpr (kPipe) {  // kv_first: once every warp holds its Q fragments, where the Q tile was
    __syncthreads();
    kv.load2(K0, p.k16, V0, p.v16, blo, N, p.KVH, g);
    cp_async_commit();
  }

  float o[D / 8][4];
  FwdRows acc;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  acc.m_a = acc.m_b = -INFINITY;
  acc.l_a = acc.l_b = 0.f;
  const float sl2 = p.scale * kLog2e;

  int buf = 0;
  for (int64_t ts = blo; ts <= last_i; ts += BN, buf ^= 1) {
    if constexpr (kPipe) {  // kv_tile: tile ts readable by every thread, the next one loading into the other buffer
      cp_async_wait_all();
      __syncthreads();
      if (ts + BN <= last_i) {
        kv.load2(K0 + (buf ^ 1) * kBuf, p.k16, V0 + (buf ^ 1) * kBuf, p.v16, ts + BN, N, p.KVH, g);
        cp_async_commit();
      }
    } else {
      kv_tile<D, BN, false>(K0, V0, kBuf, buf, p, ts, last_i, g);
    }
    const bf16* const Ks = K0 + buf * kBuf;
    const bf16* const Vs = V0 + buf * kBuf;
    if (!warp_live || ts > wlast || ts + BN - 1 < wlo) continue;  // nothing here for this warp
    if (ts + BN - 1 <= wi0 && ts >= wlo_max) {  // every pair visible
      fwd_tile<D, false>(qf, Ks, Vs, o, acc, sl2, Window{0, 0}, Window{0, 0}, lane);
    } else {
      const int32_t base = static_cast<int32_t>(ts) + 2 * tig;
      fwd_tile<D, true>(qf, Ks, Vs, o, acc, sl2, Window{rows.lo_a - base, rows.ia - base},
                        Window{rows.lo_b - base, rows.ib - base}, lane);
    }
  }
  if (!warp_live) return;
  const float la = quad_sum(acc.l_a), lb = quad_sum(acc.l_b);  // >= 1 for every real row: query i sees itself
  const float inv_a = 1.f / la, inv_b = 1.f / lb;
  const int64_t ia = wi0 + gid, ib = ia + 8;
  store_rows<D>(kIo16 ? nullptr : p.out, p.out16, kIo16 ? out16_ld(p) : H * D, h, N, ia, ib, o, inv_a, inv_b, tig);
  if (tig == 0) {
    if (ia < N) p.lse[ia * H + h] = (acc.m_a + log2f(la)) * kLn2;
    if (ib < N) p.lse[ib * H + h] = (acc.m_b + log2f(lb)) * kLn2;
  }
}

// The backward's two first products over one 16-wide k-slice: s += a_s · (its k-slice of tile Bs), dp += a_dp ·
// (of tile Bdp), both tiles n-major (rows = the NC columns, stride D + 8), each B fragment read once: S and dP in
// the dQ kernel (Q, dO fragments against K, V), Sᵀ and dPᵀ in the dK/dV kernel (K, V against Q, dO).
template <int D, int NC>
__device__ __forceinline__ void s_dp_kslice(const uint32_t (&a_s)[4], const uint32_t (&a_dp)[4], const bf16* Bs,
                                            const bf16* Bdp, int kk, float (&s)[NC / 8][4], float (&dp)[NC / 8][4],
                                            int lane) {
  constexpr int S = D + 8;
#pragma unroll
  for (int nn = 0; nn < NC / 16; ++nn) {
    uint32_t b[4];
    ldsm_x4(smem_addr(Bs + nn * 16 * S + kk * 16 + lds_b_nmajor<S>(lane)), b);
    mma_bf16(s[2 * nn], a_s, b[0], b[1]);
    mma_bf16(s[2 * nn + 1], a_s, b[2], b[3]);
    ldsm_x4(smem_addr(Bdp + nn * 16 * S + kk * 16 + lds_b_nmajor<S>(lane)), b);
    mma_bf16(dp[2 * nn], a_dp, b[0], b[1]);
    mma_bf16(dp[2 * nn + 1], a_dp, b[2], b[3]);
  }
}

// ---------------------------------------------------------------- dQ

// One key tile of the dQ kernel for one warp: S = Q·Kᵀ, dP = dO·Vᵀ, dS = P∘(dP − Δ) with P masked (kMask),
// dQ += dS·K.
template <int D, int BN, bool kMask>
__device__ __forceinline__ void dq_tile(const uint32_t (&qf)[D / 16][4], const uint32_t (&dof)[D / 16][4], const bf16* Ks,
                                        const bf16* Vs, float (&acc)[D / 8][4], float sl2, float lse_a, float lse_b,
                                        float dl_a, float dl_b, Window wa, Window wb, int lane) {
  constexpr int S = D + 8;
  float s[BN / 8][4], dp[BN / 8][4];
#pragma unroll
  for (int n = 0; n < BN / 8; ++n) {
    s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
    dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.f;
  }
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) s_dp_kslice<D, BN>(qf[kk], dof[kk], Ks, Vs, kk, s, dp, lane);
  dq_ds<BN, kMask>(s, dp, sl2, lse_a, lse_b, dl_a, dl_b, wa, wb);
#pragma unroll
  for (int kk = 0; kk < BN / 16; ++kk) mma_kslice_kmajor<D, S>(acc, a_from_c(s[2 * kk], s[2 * kk + 1]), Ks + kk * 16 * S, lane);
}

// CTA = 64 queries of head h, key tiles of BN, as flash_dq_kernel<D, BN, true, 1, kIo16> (pipelined only).
template <int D, int BN, bool kIo16>
__global__ void __launch_bounds__(kThreads) flash_dq_lean_kernel(const AttnParams p) {
  pdl_enter();
  constexpr int S = D + 8;
  constexpr int kRegion = kRows > 2 * BN ? kRows : 2 * BN;  // the Q tile or two key tiles; dO or two value tiles
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* const K0 = reinterpret_cast<bf16*>(smem_raw);
  bf16* const V0 = K0 + kRegion * S;
  constexpr int kBuf = BN * S;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
  const int64_t N = p.N, H = p.H;
  const int64_t h = blockIdx.y, g = h / (H / p.KVH);
  const int64_t i0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * kRows;
  const int64_t last_i = min(i0 + kRows - 1, N - 1);
  const int64_t blo = key_lo(p.seg_begin, i0, p.window);
  const int64_t wi0 = i0 + warp * 16;
  const bool warp_live = wi0 < N;
  const int64_t wlast = min(wi0 + 15, N - 1);
  const int64_t wlo = warp_live ? key_lo(p.seg_begin, wi0, p.window) : 0;
  const int64_t wlo_max = warp_live ? key_lo(p.seg_begin, wlast, p.window) : 0;
  const QueryRows rows(p, wi0, gid);
  const int64_t ia = rows.ia, ib = rows.ib;
  const float sl2 = p.scale * kLog2e;
  // lse in log2 units, Δ; rows past N: any finite value (their P is never stored).
  const float lse_a = ia < N ? p.lse_in[ia * H + h] * kLog2e : 0.f, lse_b = ib < N ? p.lse_in[ib * H + h] * kLog2e : 0.f;
  const float dl_a = ia < N ? p.delta[ia * H + h] : 0.f, dl_b = ib < N ? p.delta[ib * H + h] : 0.f;

  load_rows_once<D, kRows, kIo16>(K0, p.q, kIo16 ? p.q16 : nullptr, i0, N, H, h);
  load_rows_once<D, kRows, kIo16>(V0, p.dout, kIo16 ? p.do16 : nullptr, i0, N, H, h);
  __syncthreads();
  uint32_t qf[D / 16][4], dof[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    ldsm_x4(smem_addr(K0 + warp * 16 * S + kk * 16 + lds_a<S>(lane)), qf[kk]);
    ldsm_x4(smem_addr(V0 + warp * 16 * S + kk * 16 + lds_a<S>(lane)), dof[kk]);
  }
  const TileRows<D, BN> kv;  // the K / V tiles' copies (kv_first / kv_tile's, from per-thread offsets)
  __syncthreads();  // kv_first: once every warp holds its Q and dO fragments, where those tiles were
  kv.load2(K0, p.k16, V0, p.v16, blo, N, p.KVH, g);
  cp_async_commit();

  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

  int buf = 0;
  for (int64_t ts = blo; ts <= last_i; ts += BN, buf ^= 1) {
    cp_async_wait_all();  // kv_tile: tile ts readable by every thread, the next one loading into the other buffer
    __syncthreads();
    if (ts + BN <= last_i) {
      kv.load2(K0 + (buf ^ 1) * kBuf, p.k16, V0 + (buf ^ 1) * kBuf, p.v16, ts + BN, N, p.KVH, g);
      cp_async_commit();
    }
    const bf16* const Ks = K0 + buf * kBuf;
    const bf16* const Vs = V0 + buf * kBuf;
    if (!warp_live || ts > wlast || ts + BN - 1 < wlo) continue;
    if (ts + BN - 1 <= wi0 && ts >= wlo_max) {
      dq_tile<D, BN, false>(qf, dof, Ks, Vs, acc, sl2, lse_a, lse_b, dl_a, dl_b, Window{0, 0}, Window{0, 0}, lane);
    } else {
      const int32_t base = static_cast<int32_t>(ts) + 2 * tig;
      const Window wa{rows.lo_a - base, rows.ia - base}, wb{rows.lo_b - base, rows.ib - base};
      dq_tile<D, BN, true>(qf, dof, Ks, Vs, acc, sl2, lse_a, lse_b, dl_a, dl_b, wa, wb, lane);
    }
  }
  if (!warp_live) return;
  store_rows<D>(kIo16 ? nullptr : p.dq, p.dq16, H * D, h, N, ia, ib, acc, p.scale, p.scale, tig);
}

// ---------------------------------------------------------------- dK, dV

// One query tile of the dK/dV kernel for one warp: Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, Pᵀ and dSᵀ with the mask (kMask),
// dV += Pᵀ·dO, dK += dSᵀ·Q.
template <int D, int BQ, bool kMask>
__device__ __forceinline__ void dkv_tile(const bf16* Ks, const bf16* Vs, const bf16* Qs, const bf16* Os, const float* Ls,
                                         const float* Ds, float (&dk)[D / 8][4], float (&dv)[D / 8][4], float sl2,
                                         Window wa, Window wb, int warp, int lane) {
  constexpr int S = D + 8;
  const int tig = lane & 3;
  float s[BQ / 8][4], dp[BQ / 8][4];
#pragma unroll
  for (int n = 0; n < BQ / 8; ++n) {
    s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
    dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.f;
  }
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t ka[4], va[4];
    ldsm_x4(smem_addr(Ks + warp * 16 * S + kk * 16 + lds_a<S>(lane)), ka);
    ldsm_x4(smem_addr(Vs + warp * 16 * S + kk * 16 + lds_a<S>(lane)), va);
    s_dp_kslice<D, BQ>(ka, va, Qs, Os, kk, s, dp, lane);
  }
  dkv_p_ds<BQ, kMask>(s, dp, Ls, Ds, sl2, wa, wb, tig);
#pragma unroll
  for (int kk = 0; kk < BQ / 16; ++kk) {
    mma_kslice_kmajor<D, S>(dv, a_from_c(s[2 * kk], s[2 * kk + 1]), Os + kk * 16 * S, lane);
    mma_kslice_kmajor<D, S>(dk, a_from_c(dp[2 * kk], dp[2 * kk + 1]), Qs + kk * 16 * S, lane);
  }
}

// CTA = 64 keys of KV head g, as flash_dkv_kernel<D, BQ, true, kIo16> (pipelined only).
template <int D, int BQ, bool kIo16>
__global__ void __launch_bounds__(kThreads) flash_dkv_lean_kernel(const AttnParams p, const DkvTarget t) {
  pdl_enter();
  static_assert(BQ <= kThreads, "one thread a row loads a tile's lse and Δ");
  constexpr int S = D + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* const Ks = reinterpret_cast<bf16*>(smem_raw);  // (64, S) this CTA's keys
  bf16* const Vs = Ks + kRows * S;                     // (64, S) its values
  // Buffer b: the query tile at Q0 + b·kBuf, the dout tile at O0 + b·kBuf; lse, Δ at L0 / D0 + b·2BQ.
  bf16* const Q0 = Vs + kRows * S;
  bf16* const O0 = Q0 + BQ * S;
  constexpr int kBuf = 2 * BQ * S;
  float* const L0 = reinterpret_cast<float*>(Q0 + 4 * BQ * S);
  float* const D0 = L0 + BQ;
  constexpr int kRowBuf = 2 * BQ;

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
  const int32_t ja = static_cast<int32_t>(wj0 + gid), jb = ja + 8;  // this thread's two keys
  const int32_t hi_a = ja < N ? static_cast<int32_t>(query_hi(p.seg_end, ja, p.window)) : -1;  // past N: seen by none
  const int32_t hi_b = jb < N ? static_cast<int32_t>(query_hi(p.seg_end, jb, p.window)) : -1;
  const float sl2 = p.scale * kLog2e;

  load_rows_once<D, kRows, kIo16>(Ks, p.k, kIo16 ? p.k16 : nullptr, j0, N, p.KVH, g);
  load_rows_once<D, kRows, kIo16>(Vs, p.v, kIo16 ? p.v16 : nullptr, j0, N, p.KVH, g);

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    dk[n][0] = dk[n][1] = dk[n][2] = dk[n][3] = 0.f;
    dv[n][0] = dv[n][1] = dv[n][2] = dv[n][3] = 0.f;
  }

  // Tile (hh, ts) into buffer b: its Q and dO rows (both (N, H, D): TileRows shares the offsets), and its rows' lse
  // and Δ, one each for the first BQ threads (not a loop the compiler unrolls with branches); rows past N zeros.
  const TileRows<D, BQ> qo;
  const int64_t h_end = h_begin + t.hpc;
  auto prefetch = [&](int64_t hh, int64_t ts, int b) {
    qo.load2(Q0 + b * kBuf, p.q16, O0 + b * kBuf, p.do16, ts, N, H, hh);
    if (threadIdx.x < BQ) {
      const int64_t i = ts + threadIdx.x;
      const bool valid = i < N;
      cp_async4(L0 + b * kRowBuf + threadIdx.x, valid ? p.lse_in + i * H + hh : p.lse_in, valid);
      cp_async4(D0 + b * kRowBuf + threadIdx.x, valid ? p.delta + i * H + hh : p.delta, valid);
    }
    cp_async_commit();
  };
  prefetch(h_begin, j0, 0);  // j0 <= qhi: every key block has a query that sees it

  int buf = 0;
  for (int64_t h = h_begin; h < h_end; ++h) {
    for (int64_t ts = j0; ts <= qhi; ts += BQ, buf ^= 1) {
      cp_async_wait_all();
      __syncthreads();  // tile (h, ts) is in buffer buf for every thread (K, V too); buf ^ 1 is free
      if (ts + BQ <= qhi) prefetch(h, ts + BQ, buf ^ 1);
      else if (h + 1 < h_end) prefetch(h + 1, j0, buf ^ 1);
      if (!warp_live || ts > whi || ts + BQ - 1 < wj0) continue;  // nothing here for this warp
      const bf16* const Qs = Q0 + buf * kBuf;
      const bf16* const Os = O0 + buf * kBuf;
      const float* const Ls = L0 + buf * kRowBuf;
      const float* const Ds = D0 + buf * kRowBuf;
      if (ts >= wj0 + 15 && ts + BQ - 1 <= whi_min) {  // every (key, query) pair visible
        dkv_tile<D, BQ, false>(Ks, Vs, Qs, Os, Ls, Ds, dk, dv, sl2, Window{0, 0}, Window{0, 0}, warp, lane);
      } else {  // key j sees query i iff j <= i <= hi(j)
        const int32_t base = static_cast<int32_t>(ts) + 2 * tig;
        const Window wa{ja - base, hi_a - base}, wb{jb - base, hi_b - base};
        dkv_tile<D, BQ, true>(Ks, Vs, Qs, Os, Ls, Ds, dk, dv, sl2, wa, wb, warp, lane);
      }
    }
  }
  if (!warp_live) return;
  // bf16 activations not split: dk_out / dv_out null, the results go to p.dk16 / p.dv16 in bf16
  const bool to16 = kIo16 && !t.dk_out;
  store_rows<D>(to16 ? nullptr : t.dk_out, p.dk16, t.out_heads * D, u, N, ja, jb, dk, p.scale, p.scale, tig);
  store_rows<D>(to16 ? nullptr : t.dv_out, p.dv16, to16 ? dv16_ld(p) : t.out_heads * D, u, N, ja, jb, dv, 1.f, 1.f, tig);
}

template <int D, bool kPipe, bool kIo16>
void forward_lean(const AttnParams& p, cudaStream_t s) {
  const size_t smem = (kPipe ? 4 : 2) * tile_bytes(D, kRows);  // the Q tile fits in two
  allow_smem(flash_fwd_lean_kernel<D, kPipe, kIo16>, smem, "flash_fwd_lean_kernel");
  launch("flash_fwd_lean_kernel", flash_fwd_lean_kernel<D, kPipe, kIo16>, grid_of(p.N, p.H, kRows), kThreads, smem, s,
         p);
}

template <int D>
void forward_lean_any(const AttnParams& p, cudaStream_t s, bool pipelined) {
  if (p.io16) forward_lean<D, true, true>(p, s);
  else if (pipelined) forward_lean<D, true, false>(p, s);
  else forward_lean<D, false, false>(p, s);
}

template <int D, bool kIo16>
void dq_lean(const AttnParams& p, cudaStream_t s) {
  constexpr int BN = D <= 64 ? 64 : 32;  // the verified dQ kernel's key tiles
  constexpr int kRegion = kRows > 2 * BN ? kRows : 2 * BN;
  const size_t smem = 2 * tile_bytes(D, kRegion);
  allow_smem(flash_dq_lean_kernel<D, BN, kIo16>, smem, "flash_dq_lean_kernel");
  launch("flash_dq_lean_kernel", flash_dq_lean_kernel<D, BN, kIo16>, grid_of(p.N, p.H), kThreads, smem, s, p);
}

template <int D, bool kIo16>
void dkv_lean(const AttnParams& p, const DkvTarget& t, dim3 grid, cudaStream_t s) {
  constexpr int BQ = D <= 64 ? 64 : 32;  // the verified dK/dV kernel's query tiles
  const size_t smem = 2 * tile_bytes(D, kRows) + 2 * (2 * tile_bytes(D, BQ) + 2 * sizeof(float) * BQ);
  allow_smem(flash_dkv_lean_kernel<D, BQ, kIo16>, smem, "flash_dkv_lean_kernel");
  launch("flash_dkv_lean_kernel", flash_dkv_lean_kernel<D, BQ, kIo16>, grid, kThreads, smem, s, p, t);
}

template <int D>
void dkv_lean_any(const AttnParams& p, const DkvTarget& t, dim3 grid, cudaStream_t s) {
  if (p.io16) dkv_lean<D, true>(p, t, grid, s);
  else dkv_lean<D, false>(p, t, grid, s);
}

}  // namespace

bool attention_lean_takes(const AttnParams& p) {
  return p.scale > 0.f && std::isfinite(p.scale) && (p.D == 64 || p.D == 128);
}

void attention_lean_forward(const AttnParams& p, cudaStream_t s, bool pipelined) {
  if (!attention_lean_takes(p)) fail(ErrorCode::Internal, "attention_lean_forward: scale ", p.scale, ", head dim ", p.D);
  if (p.D == 64) forward_lean_any<64>(p, s, pipelined);
  else forward_lean_any<128>(p, s, pipelined);
}

void attention_lean_dq(const AttnParams& p, cudaStream_t s) {
  if (!attention_lean_takes(p)) fail(ErrorCode::Internal, "attention_lean_dq: scale ", p.scale, ", head dim ", p.D);
  if (p.D == 64) {
    if (p.io16) dq_lean<64, true>(p, s);
    else dq_lean<64, false>(p, s);
  } else {
    if (p.io16) dq_lean<128, true>(p, s);
    else dq_lean<128, false>(p, s);
  }
}

void attention_lean_dkv(const AttnParams& p, float* dk_out, float* dv_out, int64_t out_heads, int64_t hpc,
                        unsigned grid_x, unsigned grid_y, cudaStream_t s) {
  if (!attention_lean_takes(p)) fail(ErrorCode::Internal, "attention_lean_dkv: scale ", p.scale, ", head dim ", p.D);
  const DkvTarget t{dk_out, dv_out, out_heads, hpc};
  const dim3 grid(grid_x, grid_y);
  if (p.D == 64) dkv_lean_any<64>(p, t, grid, s);
  else dkv_lean_any<128>(p, t, grid, s);
}

}  // namespace cuda
}  // namespace instill
