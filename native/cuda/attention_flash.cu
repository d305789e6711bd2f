// attention on CUDA, the tensor-core kernels (flash-attention-2 style), for head dims
// 64 and 128. Same semantics as attention_simple.cu (ops/attention.h): packed causal
// GQA, optional sliding window; token i sees key j iff lo_i <= j <= i with
// lo_i = max(seg_begin[i], i − W + 1) (W > 0), query head h reads KV head h / (H / KVH).
//
// Precision: q, k, v, dout are f32 in memory and rounded to bf16 when a tile is copied
// into shared memory; P (forward, backward) and dS (backward) are rounded to bf16 as
// the A operand of the second product. Every product accumulates in f32 and softmax
// statistics (max, sum, lse, Δ) are f32, so results carry bf16 operand error: about
// 1e-2 relative to the largest output, like the GEMM-backed ops (tolerance 2e-2).
//
// Kernels (128 threads = 4 warps, 16 rows per warp, 64 rows per CTA):
//   flash_fwd_kernel<D>      CTA = 64 queries of head h; loops over key tiles of 64 from
//                            the block's first visible key to its last query: S = Q·Kᵀ
//                            (Q fragments kept in registers), mask, online softmax in
//                            registers (running max / sum per row, exp2 with scale·log2 e
//                            folded in), O += P·V with P re-used from the S registers as
//                            the A operand. Writes out = O / l and lse = ln Σ exp.
//   flash_dq_kernel<D,BN>    CTA = 64 queries of head h; key tiles of BN (64 for D=64,
//                            32 for D=128: fewer live registers): S = Q·Kᵀ, dP = dO·Vᵀ,
//                            P = exp(scale·S − lse), dS = P∘(dP − Δ), dQ += dS·K;
//                            writes dq = scale·dQ.
//   flash_dkv_kernel<D,BQ>   CTA = 64 keys of KV head g; for each query head of the group
//                            (or of its share of the group, see split below) and each
//                            query tile of BQ (64 for D=64, 32 for D=128) that can see
//                            them: Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ (keys are the M rows),
//                            Pᵀ, dSᵀ as above, dV += Pᵀ·dO, dK += dSᵀ·Q;
//                            writes dk = scale·dK, dv.
//   flash_dkv_reduce_kernel  split mode only: dk[j, g] = Σ_r dk_part[j, g·rep + r] in a
//                            fixed order (and dv).
// No atomics anywhere and every output element is written by one thread: results are
// deterministic. Split mode (short rows, few KV heads: fewer key blocks × KV heads than
// 4 × SMs) gives each query head its own CTA and writes per-head partials to scratch,
// then sums them; otherwise one CTA loops over the rep = H/KVH heads of its group.
//
// Tiles that no row of a warp can see are skipped by that warp (for a causal row that is
// about half of them); tiles that every (row, column) pair of a warp can see skip the
// per-element mask; others mask element by element, so segments of any length (1
// included), segments starting inside a tile and N not a multiple of 64 all work.
// Fully masked rows of a tile keep the running max at −inf; exp2 then uses 0 as the
// reference so that −inf − (−inf) never makes a NaN.
//
// Fragment layouts of mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32 (PTX ISA), with
// lane = 4·gid + tig (gid = lane / 4 in 0..7, tig = lane % 4 in 0..3); each .b32
// register holds two bf16, the lower column (or k) index in the low half:
//   A (16×16, row-major, 4 regs): a0 = (gid, 2tig..2tig+1), a1 = (gid+8, 2tig..),
//                                 a2 = (gid, 2tig+8..),     a3 = (gid+8, 2tig+8..)
//   B (16×8, k × n, 2 regs):      b0 = (k 2tig..2tig+1, n gid), b1 = (k 2tig+8.., n gid)
//   C (16×8 f32, 4 regs):         c0, c1 = (gid, 2tig), (gid, 2tig+1)
//                                 c2, c3 = (gid+8, 2tig), (gid+8, 2tig+1)
// So the C fragments of two adjacent n-tiles (columns 0..7 and 8..15), packed pairwise
// to bf16, ARE the A fragment of those 16 columns as a k-slice:
//   a0 = pack(C_lo.c0, C_lo.c1), a1 = pack(C_lo.c2, C_lo.c3),
//   a2 = pack(C_hi.c0, C_hi.c1), a3 = pack(C_hi.c2, C_hi.c3)
// which is how P (and dS) go from the first product to the second without shared memory.
//
// Fragments come from shared memory by ldmatrix.x4 (four 8×8 b16 matrices; lanes 8m..8m+7
// give the row addresses of matrix m; without .trans, lane receives (row gid, cols
// 2tig, 2tig+1) of each matrix in register m; with .trans, (rows 2tig, 2tig+1, col gid)):
//   A from a row-major tile (rows = M, cols = k):        row = lane % 16, col = (lane / 16)·8
//   B when the tile is stored n-major (rows = n, k contiguous, e.g. K for Q·Kᵀ), two
//   n-tiles at once (regs 0,1 = n-tile 0; regs 2,3 = n-tile 1):
//                                           row = lane % 8 + (lane / 16)·8, col = ((lane / 8) % 2)·8
//   B when the tile is stored k-major (rows = k, n contiguous, e.g. V for P·V), .trans,
//   two n-tiles at once:                    row = lane % 8 + ((lane / 8) % 2)·8, col = (lane / 16)·8
// Shared-memory rows are D + 8 bf16 long (16 bytes of padding): the eight 16-byte rows
// one ldmatrix matrix reads then fall in eight different bank groups (no conflicts).
//
// Global loads: f32 rows as float4 (16 bytes; attention_flash_supported requires 16-byte
// aligned tensors and D % 4 == 0), converted and stored as 4 bf16. Loads are synchronous
// (load, __syncthreads, compute); several CTAs per SM hide their latency.
// Pipelined (kPipe; the backward's default, INSTILL_CUDA_ATTENTION=pipelined for both): the
// streamed tiles (K/V in the forward and dQ kernels; Q, dO, lse, Δ in dK/dV) come from bf16 copies
// made once per call (attention.cu) through cp.async into two buffers: tile t + 1 loads while tile t
// computes, one __syncthreads per tile. The copies round as load_rows does, so the results are the
// synchronous path's bit for bit. The tiles loaded once per CTA stay synchronous f32 loads.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda/attention_flash.cuh"
#include "cuda/attention_kernels.cuh"
#include "cuda/common.cuh"

namespace instill {
namespace cuda {

namespace {

// ---------------------------------------------------------------- forward

// kIo16 (bf16 activations; pipelined only): Q from q16, out to out16. (Stop 13's `flash_mt` gave these kernels
// two m-tiles a warp, FA2's 128 queries a CTA; runs 14–16 measured it no faster, and stop 22 took it out.)
template <int D, bool kPipe, bool kIo16 = false>
__global__ void __launch_bounds__(kThreads) flash_fwd_kernel(const AttnParams p) {
  pdl_enter();
  static_assert(!kIo16 || kPipe, "bf16 activations stream K / V from themselves: pipelined");
  constexpr int S = D + 8;
  constexpr int KS = D / 16;  // k-steps over the head dim
  constexpr int BN = 64;      // keys per tile
  extern __shared__ __align__(16) unsigned char smem_raw[];
  // (64, S) tiles: K then V, twice when pipelined (tile t in buffer t % 2); the Q tile (kRows rows) first where
  // they go. Buffer b's K tile at K0 + b·kBuf, its V tile at V0 + b·kBuf (pointer arithmetic, not arrays: an
  // array indexed at run time would live in local memory).
  bf16* const K0 = reinterpret_cast<bf16*>(smem_raw);
  bf16* const V0 = K0 + BN * S;
  constexpr int kBuf = kPipe ? 2 * BN * S : 0;
  static_assert(kRows <= 2 * BN, "the Q tile fills the K and V tiles of buffer 0");

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
  const ThreadRows rows(p.seg_begin, p.window, N, wi0, gid);
  const int64_t ia = rows.ia, ib = rows.ib, lo_a = rows.lo_a, lo_b = rows.lo_b;

  // Q fragments for the whole loop: KS k-steps × 4 regs.
  load_rows_once<D, kRows, kIo16>(K0, p.q, kIo16 ? p.q16 : nullptr, i0, N, H, h);
  __syncthreads();
  uint32_t qf[KS][4];
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) ldsm_x4(smem_addr(K0 + warp * 16 * S + kk * 16 + lds_a<S>(lane)), qf[kk]);
  kv_first<D, BN, kPipe>(K0, V0, p, blo, g);

  float o[D / 8][4];
  float m_a = -INFINITY, m_b = -INFINITY;  // running max of scale·log2(e)·s
  float l_a = 0.f, l_b = 0.f;              // this lane's share of the running sums
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  const float sl2 = p.scale * kLog2e;

  int buf = 0;
  for (int64_t ts = blo; ts <= last_i; ts += BN, buf ^= 1) {
    kv_tile<D, BN, kPipe>(K0, V0, kBuf, buf, p, ts, last_i, g);
    const bf16* const Ks = K0 + buf * kBuf;
    const bf16* const Vs = V0 + buf * kBuf;
    if (!warp_live || ts > wlast || ts + BN - 1 < wlo) continue;  // nothing here for this warp
    const bool full = ts + BN - 1 <= wi0 && ts >= wlo_max;        // every pair visible

    float s[BN / 8][4];
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
#pragma unroll
      for (int nn = 0; nn < BN / 16; ++nn) {
        uint32_t b[4];
        ldsm_x4(smem_addr(Ks + nn * 16 * S + kk * 16 + lds_b_nmajor<S>(lane)), b);
        mma_bf16(s[2 * nn], qf[kk], b[0], b[1]);
        mma_bf16(s[2 * nn + 1], qf[kk], b[2], b[3]);
      }
    }
    // s[n][0..1]: row ia, keys ts + 8n + 2tig + {0, 1}; s[n][2..3]: row ib, same keys.
    float ta = -INFINITY, tb = -INFINITY;
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[n][e] * sl2;
        if (!full) {
          const int64_t j = ts + 8 * n + 2 * tig + (e & 1);
          const int64_t i = e < 2 ? ia : ib;
          const int64_t lo = e < 2 ? lo_a : lo_b;
          if (j < lo || j > i) x = -INFINITY;
        }
        s[n][e] = x;
      }
      ta = fmaxf(ta, fmaxf(s[n][0], s[n][1]));
      tb = fmaxf(tb, fmaxf(s[n][2], s[n][3]));
    }
    const float na = fmaxf(m_a, quad_max(ta)), nb = fmaxf(m_b, quad_max(tb));
    const float ra = na == -INFINITY ? 0.f : na, rb = nb == -INFINITY ? 0.f : nb;
    const float ca = exp2f(m_a - ra), cb = exp2f(m_b - rb);  // 0 while a row has seen nothing
    m_a = na;
    m_b = nb;
    l_a *= ca;
    l_b *= cb;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= ca; o[n][1] *= ca;
      o[n][2] *= cb; o[n][3] *= cb;
    }
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
      s[n][0] = exp2f(s[n][0] - ra); s[n][1] = exp2f(s[n][1] - ra);
      s[n][2] = exp2f(s[n][2] - rb); s[n][3] = exp2f(s[n][3] - rb);
      l_a += s[n][0] + s[n][1];
      l_b += s[n][2] + s[n][3];
    }
    // O += P·V: P's C fragments are the A fragments (keys 16kk .. 16kk + 15 as k).
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) mma_kslice_kmajor<D, S>(o, a_from_c(s[2 * kk], s[2 * kk + 1]), Vs + kk * 16 * S, lane);
  }
  if (!warp_live) return;
  const float la = quad_sum(l_a), lb = quad_sum(l_b);
  // l >= 1 for every real row: query i always sees itself.
  const float inv_a = 1.f / la, inv_b = 1.f / lb;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    const int d = 8 * n + 2 * tig;
    if constexpr (kIo16) {
      if (ia < N) store2(p.out16 + ia * out16_ld(p) + h * D + d, o[n][0] * inv_a, o[n][1] * inv_a);
      if (ib < N) store2(p.out16 + ib * out16_ld(p) + h * D + d, o[n][2] * inv_b, o[n][3] * inv_b);
    } else {
      if (ia < N) *reinterpret_cast<float2*>(p.out + (ia * H + h) * D + d) = make_float2(o[n][0] * inv_a, o[n][1] * inv_a);
      if (ib < N) *reinterpret_cast<float2*>(p.out + (ib * H + h) * D + d) = make_float2(o[n][2] * inv_b, o[n][3] * inv_b);
    }
  }
  if (tig == 0) {
    if (ia < N) p.lse[ia * H + h] = (m_a + log2f(la)) * kLn2;
    if (ib < N) p.lse[ib * H + h] = (m_b + log2f(lb)) * kLn2;
  }
}

// ---------------------------------------------------------------- dQ

// kIo16 (bf16 activations; pipelined only): Q and dO from q16 / do16, dq to dq16.
template <int D, int BN, bool kPipe, bool kIo16 = false>
__global__ void __launch_bounds__(kThreads) flash_dq_kernel(const AttnParams p) {
  pdl_enter();
  static_assert(!kIo16 || kPipe, "bf16 activations stream K / V from themselves: pipelined");
  constexpr int S = D + 8;
  constexpr int KS = D / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  // Key tiles of BN rows, then value tiles (two of each when pipelined: tile t in buffer t % 2). The
  // Q tile (kRows rows) goes first where the key tiles go, the dO tile where the value tiles go: each region
  // holds kRegion rows. Buffer b's key tile at K0 + b·kBuf, its value tile at V0 + b·kBuf.
  constexpr int kKv = kPipe ? 2 * BN : BN;
  constexpr int kRegion = kRows > kKv ? kRows : kKv;
  bf16* const K0 = reinterpret_cast<bf16*>(smem_raw);
  bf16* const V0 = K0 + kRegion * S;
  constexpr int kBuf = kPipe ? BN * S : 0;

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
  const ThreadRows rows(p.seg_begin, p.window, N, wi0, gid);
  const int64_t ia = rows.ia, ib = rows.ib, lo_a = rows.lo_a, lo_b = rows.lo_b;
  const float sl2 = p.scale * kLog2e;
  // lse in log2 units; Δ. Rows past N: any finite value (their P is masked to 0).
  const float lse_a = ia < N ? p.lse_in[ia * H + h] * kLog2e : 0.f;
  const float lse_b = ib < N ? p.lse_in[ib * H + h] * kLog2e : 0.f;
  const float dl_a = ia < N ? p.delta[ia * H + h] : 0.f;
  const float dl_b = ib < N ? p.delta[ib * H + h] : 0.f;

  load_rows_once<D, kRows, kIo16>(K0, p.q, kIo16 ? p.q16 : nullptr, i0, N, H, h);
  load_rows_once<D, kRows, kIo16>(V0, p.dout, kIo16 ? p.do16 : nullptr, i0, N, H, h);
  __syncthreads();
  uint32_t qf[KS][4], dof[KS][4];
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    ldsm_x4(smem_addr(K0 + warp * 16 * S + kk * 16 + lds_a<S>(lane)), qf[kk]);
    ldsm_x4(smem_addr(V0 + warp * 16 * S + kk * 16 + lds_a<S>(lane)), dof[kk]);
  }
  kv_first<D, BN, kPipe>(K0, V0, p, blo, g);

  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

  int buf = 0;
  for (int64_t ts = blo; ts <= last_i; ts += BN, buf ^= 1) {
    kv_tile<D, BN, kPipe>(K0, V0, kBuf, buf, p, ts, last_i, g);
    const bf16* const Ks = K0 + buf * kBuf;
    const bf16* const Vs = V0 + buf * kBuf;
    if (!warp_live || ts > wlast || ts + BN - 1 < wlo) continue;
    const bool full = ts + BN - 1 <= wi0 && ts >= wlo_max;

    float s[BN / 8][4], dp[BN / 8][4];
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
      dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.f;
    }
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
#pragma unroll
      for (int nn = 0; nn < BN / 16; ++nn) {
        uint32_t b[4];
        ldsm_x4(smem_addr(Ks + nn * 16 * S + kk * 16 + lds_b_nmajor<S>(lane)), b);
        mma_bf16(s[2 * nn], qf[kk], b[0], b[1]);
        mma_bf16(s[2 * nn + 1], qf[kk], b[2], b[3]);
        ldsm_x4(smem_addr(Vs + nn * 16 * S + kk * 16 + lds_b_nmajor<S>(lane)), b);
        mma_bf16(dp[2 * nn], dof[kk], b[0], b[1]);
        mma_bf16(dp[2 * nn + 1], dof[kk], b[2], b[3]);
      }
    }
    // dS = P ∘ (dP − Δ), P = 2^(sl2·s − lse·log2 e), masked to 0; kept in s.
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float pr = exp2f(fmaf(s[n][e], sl2, e < 2 ? -lse_a : -lse_b));
        if (!full) {
          const int64_t j = ts + 8 * n + 2 * tig + (e & 1);
          const int64_t i = e < 2 ? ia : ib;
          const int64_t lo = e < 2 ? lo_a : lo_b;
          if (j < lo || j > i) pr = 0.f;
        }
        s[n][e] = pr * (dp[n][e] - (e < 2 ? dl_a : dl_b));
      }
    }
    // dQ += dS·K: dS as A (keys as k), K k-major (rows = keys) through ldmatrix.trans.
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) mma_kslice_kmajor<D, S>(acc, a_from_c(s[2 * kk], s[2 * kk + 1]), Ks + kk * 16 * S, lane);
  }
  if (!warp_live) return;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    const int d = 8 * n + 2 * tig;
    if constexpr (kIo16) {
      if (ia < N) store2(p.dq16 + (ia * H + h) * D + d, acc[n][0] * p.scale, acc[n][1] * p.scale);
      if (ib < N) store2(p.dq16 + (ib * H + h) * D + d, acc[n][2] * p.scale, acc[n][3] * p.scale);
    } else {
      if (ia < N) *reinterpret_cast<float2*>(p.dq + (ia * H + h) * D + d) = make_float2(acc[n][0] * p.scale, acc[n][1] * p.scale);
      if (ib < N) *reinterpret_cast<float2*>(p.dq + (ib * H + h) * D + d) = make_float2(acc[n][2] * p.scale, acc[n][3] * p.scale);
    }
  }
}

// ---------------------------------------------------------------- dK, dV

// kIo16 (bf16 activations; pipelined only): K, V from k16 / v16 (Q, dO stream from q16 / do16 as pipelined).
template <int D, int BQ, bool kPipe, bool kIo16 = false>
__global__ void __launch_bounds__(kThreads) flash_dkv_kernel(const AttnParams p, const DkvTarget t) {
  pdl_enter();
  static_assert(!kIo16 || kPipe, "bf16 activations stream Q / dO from themselves: pipelined");
  constexpr int S = D + 8;
  constexpr int KS = D / 16;
  constexpr int kBufs = kPipe ? 2 : 1;  // query tile t in buffer t % 2 when pipelined
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* const Ks = reinterpret_cast<bf16*>(smem_raw);  // (64, S) this CTA's keys
  bf16* const Vs = Ks + kRows * S;                     // (64, S) its values
  // Buffer b: the query tile at Q0 + b·kBuf, the dout tile at O0 + b·kBuf (BQ, S) each; the tile's
  // rows' lse (natural log) at L0 + b·kRowBuf, their Δ at D0 + b·kRowBuf (BQ floats each).
  bf16* const Q0 = Vs + kRows * S;
  bf16* const O0 = Q0 + BQ * S;
  constexpr int kBuf = kPipe ? 2 * BQ * S : 0;
  float* const L0 = reinterpret_cast<float*>(Q0 + 2 * kBufs * BQ * S);
  float* const D0 = L0 + BQ;
  constexpr int kRowBuf = kPipe ? 2 * BQ : 0;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
  const int64_t N = p.N, H = p.H, rep = H / p.KVH;
  const int64_t u = blockIdx.y, h_begin = u * t.hpc, g = h_begin / rep;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kRows;  // the longest key blocks come first already
  const int64_t last_j = min(j0 + kRows - 1, N - 1);
  const int64_t qhi = query_hi(p.seg_end, last_j, p.window);  // last query of the block

  const int64_t wj0 = j0 + warp * 16;
  const bool warp_live = wj0 < N;
  const int64_t wlast = min(wj0 + 15, N - 1);
  const int64_t whi_min = warp_live ? query_hi(p.seg_end, wj0, p.window) : -1;
  const int64_t whi = warp_live ? query_hi(p.seg_end, wlast, p.window) : -1;
  const int64_t ja = wj0 + gid, jb = ja + 8;  // this thread's two keys
  const int64_t hi_a = ja < N ? query_hi(p.seg_end, ja, p.window) : -1;  // keys past N: seen by none
  const int64_t hi_b = jb < N ? query_hi(p.seg_end, jb, p.window) : -1;
  const float sl2 = p.scale * kLog2e;

  load_rows_once<D, kRows, kIo16>(Ks, p.k, kIo16 ? p.k16 : nullptr, j0, N, p.KVH, g);
  load_rows_once<D, kRows, kIo16>(Vs, p.v, kIo16 ? p.v16 : nullptr, j0, N, p.KVH, g);

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    dk[n][0] = dk[n][1] = dk[n][2] = dk[n][3] = 0.f;
    dv[n][0] = dv[n][1] = dv[n][2] = dv[n][3] = 0.f;
  }

  // The query tiles in order: heads h_begin .. h_end − 1, each from query j0 to qhi in steps of BQ.
  const int64_t h_end = h_begin + t.hpc;
  // Tile (hh, ts) into buffer b: the bf16 Q and dO rows, lse and Δ (rows past N: zeros), asynchronously.
  auto prefetch = [&](int64_t hh, int64_t ts, int b) {
    load_rows_async<D, BQ>(Q0 + b * kBuf, p.q16, ts, N, H, hh);
    load_rows_async<D, BQ>(O0 + b * kBuf, p.do16, ts, N, H, hh);
    for (int r = threadIdx.x; r < BQ; r += kThreads) {
      const int64_t i = ts + r;
      const bool valid = i < N;
      cp_async4(L0 + b * kRowBuf + r, valid ? p.lse_in + i * H + hh : p.lse_in, valid);
      cp_async4(D0 + b * kRowBuf + r, valid ? p.delta + i * H + hh : p.delta, valid);
    }
    cp_async_commit();
  };
  if constexpr (kPipe) prefetch(h_begin, j0, 0);  // j0 <= qhi: every key block has a query that sees it

  int buf = 0;
  for (int64_t h = h_begin; h < h_end; ++h) {
    for (int64_t ts = j0; ts <= qhi; ts += BQ, buf ^= 1) {
      if constexpr (kPipe) {
        cp_async_wait_all();
        __syncthreads();  // tile (h, ts) is in buffer buf for every thread (K, V too); buf ^ 1 is free
        const bool last_ts = ts + BQ > qhi;
        if (!last_ts) prefetch(h, ts + BQ, buf ^ 1);
        else if (h + 1 < h_end) prefetch(h + 1, j0, buf ^ 1);
      } else {
        __syncthreads();  // the previous tile is consumed (and K, V are stored, first time)
        load_rows<D, BQ>(Q0, p.q, ts, N, H, h);
        load_rows<D, BQ>(O0, p.dout, ts, N, H, h);
        for (int r = threadIdx.x; r < BQ; r += kThreads) {
          const int64_t i = ts + r;
          L0[r] = i < N ? p.lse_in[i * H + h] : 0.f;
          D0[r] = i < N ? p.delta[i * H + h] : 0.f;
        }
        __syncthreads();
      }
      const bf16* const Qs = Q0 + buf * kBuf;
      const bf16* const Os = O0 + buf * kBuf;
      const float* const Ls = L0 + buf * kRowBuf;
      const float* const Ds = D0 + buf * kRowBuf;
      if (!warp_live || ts > whi || ts + BQ - 1 < wj0) continue;
      const bool full = ts >= wj0 + 15 && ts + BQ - 1 <= whi_min;  // every (key, query) pair visible

      // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ: rows = this warp's 16 keys, columns = BQ queries.
      float s[BQ / 8][4], dp[BQ / 8][4];
#pragma unroll
      for (int n = 0; n < BQ / 8; ++n) {
        s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
        dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.f;
      }
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        uint32_t ka[4], va[4];
        ldsm_x4(smem_addr(Ks + warp * 16 * S + kk * 16 + lds_a<S>(lane)), ka);
        ldsm_x4(smem_addr(Vs + warp * 16 * S + kk * 16 + lds_a<S>(lane)), va);
#pragma unroll
        for (int nn = 0; nn < BQ / 16; ++nn) {
          uint32_t b[4];
          ldsm_x4(smem_addr(Qs + nn * 16 * S + kk * 16 + lds_b_nmajor<S>(lane)), b);
          mma_bf16(s[2 * nn], ka, b[0], b[1]);
          mma_bf16(s[2 * nn + 1], ka, b[2], b[3]);
          ldsm_x4(smem_addr(Os + nn * 16 * S + kk * 16 + lds_b_nmajor<S>(lane)), b);
          mma_bf16(dp[2 * nn], va, b[0], b[1]);
          mma_bf16(dp[2 * nn + 1], va, b[2], b[3]);
        }
      }
      // s[n][0..1]: key ja, queries ts + 8n + 2tig + {0, 1}; s[n][2..3]: key jb.
      // Pᵀ into s, dSᵀ into dp.
#pragma unroll
      for (int n = 0; n < BQ / 8; ++n) {
        const int c = 8 * n + 2 * tig;
        const float2 l2 = *reinterpret_cast<const float2*>(Ls + c);
        const float2 d2 = *reinterpret_cast<const float2*>(Ds + c);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float pr = exp2f(fmaf(s[n][e], sl2, -(((e & 1) ? l2.y : l2.x) * kLog2e)));
          if (!full) {
            const int64_t i = ts + c + (e & 1);
            const int64_t j = e < 2 ? ja : jb;
            const int64_t hi = e < 2 ? hi_a : hi_b;
            if (i < j || i > hi) pr = 0.f;
          }
          s[n][e] = pr;
          dp[n][e] = pr * (dp[n][e] - ((e & 1) ? d2.y : d2.x));
        }
      }
      // dV += Pᵀ·dO and dK += dSᵀ·Q: queries as k; dO and Q k-major through .trans.
#pragma unroll
      for (int kk = 0; kk < BQ / 16; ++kk) {
        mma_kslice_kmajor<D, S>(dv, a_from_c(s[2 * kk], s[2 * kk + 1]), Os + kk * 16 * S, lane);
        mma_kslice_kmajor<D, S>(dk, a_from_c(dp[2 * kk], dp[2 * kk + 1]), Qs + kk * 16 * S, lane);
      }
    }
  }
  if (!warp_live) return;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    const int d = 8 * n + 2 * tig;
    if constexpr (kIo16) {
      if (!t.dk_out) {
        if (ja < N) {
          store2(p.dk16 + (ja * t.out_heads + u) * D + d, dk[n][0] * p.scale, dk[n][1] * p.scale);
          store2(p.dv16 + ja * dv16_ld(p) + u * D + d, dv[n][0], dv[n][1]);
        }
        if (jb < N) {
          store2(p.dk16 + (jb * t.out_heads + u) * D + d, dk[n][2] * p.scale, dk[n][3] * p.scale);
          store2(p.dv16 + jb * dv16_ld(p) + u * D + d, dv[n][2], dv[n][3]);
        }
        continue;
      }
    }
    if (ja < N) {
      *reinterpret_cast<float2*>(t.dk_out + (ja * t.out_heads + u) * D + d) = make_float2(dk[n][0] * p.scale, dk[n][1] * p.scale);
      *reinterpret_cast<float2*>(t.dv_out + (ja * t.out_heads + u) * D + d) = make_float2(dv[n][0], dv[n][1]);
    }
    if (jb < N) {
      *reinterpret_cast<float2*>(t.dk_out + (jb * t.out_heads + u) * D + d) = make_float2(dk[n][2] * p.scale, dk[n][3] * p.scale);
      *reinterpret_cast<float2*>(t.dv_out + (jb * t.out_heads + u) * D + d) = make_float2(dv[n][2], dv[n][3]);
    }
  }
}

// dk[j, g, :] = Σ_{r < rep} dk_part[j, g·rep + r, :] (and dv), r in order: deterministic.
// One thread per 4 floats (D % 4 == 0, 16-byte aligned). Out: float, or bf16 (bf16 activations). dv's rows are ldv
// elements apart (KVH·D, or a packed dy's ld: AttnParams' lddv16).
template <typename Out = float>
__global__ void flash_dkv_reduce_kernel(const float* dk_part, const float* dv_part, int64_t N, int64_t KVH,
                                        int64_t rep, int64_t D, Out* dk, Out* dv, int64_t ldv) {
  pdl_enter();
  const int64_t quads = N * KVH * (D / 4);
  for (int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; x < quads;
       x += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = x / (D / 4), c = (x % (D / 4)) * 4;  // row = j·KVH + g
    const int64_t base = row * rep * D + c;                  // (j, g·rep, c) in (N, H, D)
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f), b = a;
    for (int64_t r = 0; r < rep; ++r) {
      const float4 x1 = *reinterpret_cast<const float4*>(dk_part + base + r * D);
      const float4 x2 = *reinterpret_cast<const float4*>(dv_part + base + r * D);
      a.x += x1.x; a.y += x1.y; a.z += x1.z; a.w += x1.w;
      b.x += x2.x; b.y += x2.y; b.z += x2.z; b.w += x2.w;
    }
    store4(dk + row * D + c, a);
    // (a packed dv's rows ldv apart: the division only then, the default's index as it was)
    store4(dv + (ldv == KVH * D ? row * D : (row / KVH) * ldv + (row % KVH) * D) + c, b);
  }
}


template <int D, bool kPipe, bool kIo16 = false>
void forward_d(const AttnParams& p, cudaStream_t s) {
  const size_t smem = (kPipe ? 4 : 2) * tile_bytes(D, kRows);  // the Q tile fits in two
  allow_smem(flash_fwd_kernel<D, kPipe, kIo16>, smem, "flash_fwd_kernel");
  launch("flash_fwd_kernel", flash_fwd_kernel<D, kPipe, kIo16>, grid_of(p.N, p.H, kRows), kThreads, smem, s, p);
}

template <int D, bool kPipe, bool kIo16 = false>
void backward_d(const AttnParams& p, cudaStream_t s) {
  constexpr int BN = D <= 64 ? 64 : 32;  // dq: key tile
  constexpr int BQ = D <= 64 ? 64 : 32;  // dkv: query tile
  // flash_lean (attention_lean.cu): in place of the dQ kernels below and of the dK/dV kernel, on bf16 tiles
  const bool lean = kPipe && next_kernels(Next::FlashLean) && attention_lean_takes(p);
  if (lean && next_kernels(Next::DqWgmma) && attention_wgmma_takes_dq(p)) {  // attention_wgmma.cu (Hopper)
    attention_wgmma_dq(p, s);
  } else {
    const OpPart part(lean ? "dq kernel, lean (next)" : "dq kernel", Device::CUDA);
    if (lean) {
      attention_lean_dq(p, s);
    } else {
      constexpr int kKv = kPipe ? 2 * BN : BN;
      const size_t smem = 2 * tile_bytes(D, kRows > kKv ? kRows : kKv);  // the Q / key region, the dO / value region
      allow_smem(flash_dq_kernel<D, BN, kPipe, kIo16>, smem, "flash_dq_kernel");
      launch("flash_dq_kernel", flash_dq_kernel<D, BN, kPipe, kIo16>, grid_of(p.N, p.H, kRows), kThreads, smem, s, p);
    }
  }

  // (dkv_pairs, dkv_whole, dq_atomic and dkv_atomic were removed after run 17 measured them no faster)
  const bool split = p.dk_part != nullptr && p.dv_part != nullptr;
  const int64_t rep = p.H / p.KVH;
  DkvTarget t{};
  if (split) {
    t.dk_out = p.dk_part; t.dv_out = p.dv_part; t.out_heads = p.H; t.hpc = 1;
  } else {
    t.dk_out = p.dk; t.dv_out = p.dv; t.out_heads = p.KVH; t.hpc = rep;  // io16: null, so p.dk16 / p.dv16
  }
  const int bufs = kPipe ? 2 : 1;
  const size_t smem_dkv = 2 * tile_bytes(D, kRows) + bufs * (2 * tile_bytes(D, BQ) + 2 * sizeof(float) * BQ);
  if (lean && next_kernels(Next::DkvWgmma) && attention_wgmma_takes_dkv(p)) {  // attention_wgmma.cu (Hopper)
    const dim3 grid = grid_of(p.N, split ? p.H : p.KVH);
    const char* name = split ? "dk dv kernel (per query head), wgmma (next)" : "dk dv kernel, wgmma (next)";
    attention_wgmma_dkv(p, t.dk_out, t.dv_out, t.out_heads, t.hpc, grid.x, grid.y, name, s);
  } else {
    std::string name = split ? "dk dv kernel (per query head)" : "dk dv kernel";
    if (lean) name += ", lean (next)";
    const OpPart part(name.c_str(), Device::CUDA);
    const dim3 grid = grid_of(p.N, split ? p.H : p.KVH);
    if (lean) {
      attention_lean_dkv(p, t.dk_out, t.dv_out, t.out_heads, t.hpc, grid.x, grid.y, s);
    } else {
      allow_smem(flash_dkv_kernel<D, BQ, kPipe, kIo16>, smem_dkv, "flash_dkv_kernel");
      launch("flash_dkv_kernel", flash_dkv_kernel<D, BQ, kPipe, kIo16>, grid, kThreads, smem_dkv, s, p, t);
    }
  }
  if (split) {
    const OpPart part("dk dv sum over query heads", Device::CUDA);
    if constexpr (kIo16) {
      launch("flash_dkv_reduce_kernel", flash_dkv_reduce_kernel<bf16>, grid_1d(p.N * p.KVH * (D / 4), 256), 256, 0, s,
             p.dk_part, p.dv_part, p.N, p.KVH, rep, D, p.dk16, p.dv16, dv16_ld(p));
    } else {
      launch("flash_dkv_reduce_kernel", flash_dkv_reduce_kernel<float>, grid_1d(p.N * p.KVH * (D / 4), 256), 256, 0, s,
             p.dk_part, p.dv_part, p.N, p.KVH, rep, D, p.dk, p.dv, p.KVH * D);
    }
  }
}

}  // namespace

bool attention_flash_supported(const AttnParams& p) {
  if (p.D != 64 && p.D != 128) return false;
  if (p.KVH <= 0 || p.H % p.KVH != 0) return false;
  for (const void* ptr : {static_cast<const void*>(p.q), static_cast<const void*>(p.k), static_cast<const void*>(p.v),
                          static_cast<const void*>(p.out), static_cast<const void*>(p.dout),
                          static_cast<const void*>(p.out_in), static_cast<const void*>(p.dq),
                          static_cast<const void*>(p.dk), static_cast<const void*>(p.dv),
                          static_cast<const void*>(p.q16), static_cast<const void*>(p.k16),
                          static_cast<const void*>(p.v16), static_cast<const void*>(p.do16),
                          static_cast<const void*>(p.out16_in), static_cast<const void*>(p.out16),
                          static_cast<const void*>(p.dq16), static_cast<const void*>(p.dk16),
                          static_cast<const void*>(p.dv16)})
    if (!aligned(ptr, 16)) return false;  // null (not used by this call) is aligned
  return p.ldo16 % 8 == 0 && p.lddv16 % 8 == 0;  // packed rows 16-byte aligned, as the tensors' are
}

bool attention_flash_dkv_split(const AttnParams& p) {
  if (p.KVH <= 0 || p.H == p.KVH) return false;
  const int64_t ctas = (p.N + kRows - 1) / kRows * p.KVH;
  return ctas < 4 * static_cast<int64_t>(sm_count());
}

namespace {
// The three kinds of kernel at one head dim: synchronous f32 tiles, pipelined bf16 copies, bf16 activations
// (io16: pipelined on the tensors themselves).
template <int D>
void forward_any(const AttnParams& p, cudaStream_t s, bool pipelined) {
  if (p.io16) forward_d<D, true, true>(p, s);
  else if (pipelined) forward_d<D, true>(p, s);
  else forward_d<D, false>(p, s);
}
template <int D>
void backward_any(const AttnParams& p, cudaStream_t s, bool pipelined) {
  if (p.io16) backward_d<D, true, true>(p, s);
  else if (pipelined) backward_d<D, true>(p, s);
  else backward_d<D, false>(p, s);
}
}  // namespace

void attention_flash_forward(const AttnParams& p, cudaStream_t s, bool pipelined) {
  if ((pipelined || p.io16) && (!p.k16 || !p.v16)) fail(ErrorCode::Internal, "attention_flash_forward: pipelined without bf16 K, V");
  if (p.io16 && (!p.q16 || !p.out16)) fail(ErrorCode::Internal, "attention_flash_forward: io16 without bf16 tensors");
  if (next_kernels(Next::FlashWgmma) && attention_wgmma_takes(p)) return attention_wgmma_forward(p, s);  // Hopper
  if (next_kernels(Next::FlashLean) && attention_lean_takes(p)) {  // attention_lean.cu, in place of every kernel below
    const OpPart part("flash kernel, lean (next)", Device::CUDA);
    return attention_lean_forward(p, s, pipelined);
  }
  if (p.D == 64) forward_any<64>(p, s, pipelined);
  else if (p.D == 128) forward_any<128>(p, s, pipelined);
  else fail(ErrorCode::Internal, "attention_flash_forward: head dim ", p.D, " not instantiated");
}

void attention_flash_backward(const AttnParams& p, cudaStream_t s, bool pipelined) {
  if ((pipelined || p.io16) && (!p.q16 || !p.k16 || !p.v16 || !p.do16))
    fail(ErrorCode::Internal, "attention_flash_backward: pipelined without bf16 Q, K, V, dO");
  if (p.io16 && (!p.dq16 || !p.dk16 || !p.dv16)) fail(ErrorCode::Internal, "attention_flash_backward: io16 without bf16 outputs");
  if (p.D == 64) backward_any<64>(p, s, pipelined);
  else if (p.D == 128) backward_any<128>(p, s, pipelined);
  else fail(ErrorCode::Internal, "attention_flash_backward: head dim ", p.D, " not instantiated");
}

}  // namespace cuda
}  // namespace instill
