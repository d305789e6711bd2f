// The lean flash kernels' shared device code (attention_lean.cu; attention_wgmma.cu's Hopper kernels run the same
// arithmetic between their warpgroup products): the one-instruction exponential, a thread's query rows, the output
// stores, the forward's online softmax of one key tile, the dQ kernel's dS and the dK/dV kernel's Pᵀ and dSᵀ.
// attention_lean.cu's header comment says what is lean about them. Internal linkage, as attention_flash.cuh.
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention_flash.cuh"

namespace instill {
namespace cuda {
namespace {

// 2^x in one MUFU instruction, denormal results flushed to 0 (ex2(−inf) = 0).
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The forward and dQ kernels' query rows of one thread (C rows gid and gid + 8 of its warp's m-tile) in 32 bits,
// with the first key each sees; rows past N see nothing (lo = INT32_MAX).
struct QueryRows {
  int32_t ia, ib, lo_a, lo_b;
  QueryRows() = default;
  __device__ __forceinline__ QueryRows(const AttnParams& p, int64_t wi0, int gid) {
    ia = static_cast<int32_t>(wi0 + gid);
    ib = ia + 8;
    lo_a = ia < p.N ? static_cast<int32_t>(key_lo(p.seg_begin, ia, p.window)) : INT32_MAX;
    lo_b = ib < p.N ? static_cast<int32_t>(key_lo(p.seg_begin, ib, p.window)) : INT32_MAX;
  }
};

// The epilogue: a thread's two rows ra and rb (C rows gid, gid + 8) of an output of `ld` elements a token, heads of D
// (ld = heads · D: an (N, heads, D) tensor), at head `head`, each row's values times its factor, as f32 pairs (out32)
// or bf16 pairs (out16 when out32 is null); rows past N skipped.
template <int D>
__device__ __forceinline__ void store_rows(float* out32, bf16* out16, int64_t ld, int64_t head, int64_t N, int64_t ra,
                                           int64_t rb, const float (&acc)[D / 8][4], float fa, float fb, int tig) {
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    const int d = 8 * n + 2 * tig;
    if (out32) {
      if (ra < N) *reinterpret_cast<float2*>(out32 + ra * ld + head * D + d) = make_float2(acc[n][0] * fa, acc[n][1] * fa);
      if (rb < N) *reinterpret_cast<float2*>(out32 + rb * ld + head * D + d) = make_float2(acc[n][2] * fb, acc[n][3] * fb);
    } else {
      if (ra < N) store2(out16 + ra * ld + head * D + d, acc[n][0] * fa, acc[n][1] * fa);
      if (rb < N) store2(out16 + rb * ld + head * D + d, acc[n][2] * fb, acc[n][3] * fb);
    }
  }
}

// The warp's m-tile's running max m (in scale·log2(e) units) and this lane's share of the running sum, per row
// (gid and gid + 8); its O is kept beside.
struct FwdRows {
  float m_a, m_b, l_a, l_b;
};

// O's factors where a row's max moved (fwd_softmax with kDefer): rescale set when any row of the warp has one.
struct Rescale {
  bool rescale;
  float ca, cb;
  template <int D>
  __device__ __forceinline__ void apply(float (&o)[D / 8][4]) const {
    if (!rescale) return;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= ca; o[n][1] *= ca;
      o[n][2] *= cb; o[n][3] *= cb;
    }
  }
};

// The forward's online softmax over one key tile of BN for one warp (attention_lean.cu's and attention_wgmma.cu's
// forward kernels): s, the m-tile's raw scores (C fragments), masked (kMask), the running max and sums in `a`
// updated, O rescaled where a row's max moved, and s turned into P = 2^(s·c − m) in place. With kDefer O is left
// alone and its factors go to *deferred (set by the caller to no rescale), for a caller whose O is still being written
// by a product in flight (attention_wgmma.cu's forward at D 64).
template <int D, int BN, bool kMask, bool kDefer = false>
__device__ __forceinline__ void fwd_softmax(float (&s)[BN / 8][4], float (&o)[D / 8][4], FwdRows& a, float sl2, Window wa,
                                            Window wb, Rescale* deferred = nullptr) {
  if constexpr (kMask) {
#pragma unroll
    for (int n = 0; n < BN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (!(e < 2 ? wa : wb).sees(8 * n + (e & 1))) s[n][e] = -INFINITY;
  }
  float ta = -INFINITY, tb = -INFINITY;  // raw row maxima
#pragma unroll
  for (int n = 0; n < BN / 8; ++n) {
    ta = fmaxf(ta, fmaxf(s[n][0], s[n][1]));
    tb = fmaxf(tb, fmaxf(s[n][2], s[n][3]));
  }
  const float na = fmaxf(a.m_a, quad_max(ta) * sl2), nb = fmaxf(a.m_b, quad_max(tb) * sl2);
  // A row that has seen nothing yet keeps m = −inf; 0 as its reference keeps −inf − (−inf) out. Only a masked
  // tile can leave a row so (an unmasked one shows every live row a key; rows past N compute on zeros).
  const float ra = kMask && na == -INFINITY ? 0.f : na, rb = kMask && nb == -INFINITY ? 0.f : nb;
  // Where no row of the warp has a new max, every factor is ex2(0) = 1 (or a row that has seen nothing yet,
  // whose sums are 0): the rescale changes no bit, and the warp skips it (most tiles past a row's first few).
  // Exact as built (no -ftz / fast math: x·1 keeps a denormal x).
  if (!__all_sync(0xffffffffu, na == a.m_a && nb == a.m_b)) {
    const float ca = ex2(a.m_a - ra), cb = ex2(a.m_b - rb);
    a.l_a *= ca;
    a.l_b *= cb;
    if constexpr (kDefer) {
      *deferred = Rescale{true, ca, cb};
    } else {
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        o[n][0] *= ca; o[n][1] *= ca;
        o[n][2] *= cb; o[n][3] *= cb;
      }
    }
  }
  a.m_a = na;
  a.m_b = nb;
#pragma unroll
  for (int n = 0; n < BN / 8; ++n) {
    s[n][0] = ex2(fmaf(s[n][0], sl2, -ra)); s[n][1] = ex2(fmaf(s[n][1], sl2, -ra));
    s[n][2] = ex2(fmaf(s[n][2], sl2, -rb)); s[n][3] = ex2(fmaf(s[n][3], sl2, -rb));
    a.l_a += s[n][0] + s[n][1];
    a.l_b += s[n][2] + s[n][3];
  }
}

// The dQ kernels' dS over one key tile for one warp (attention_lean.cu's and attention_wgmma.cu's): from S and dP (C
// fragments of the warp's rows), P = 2^(s·c − lse) masked (kMask), and dS = P∘(dP − Δ) into s.
template <int BN, bool kMask>
__device__ __forceinline__ void dq_ds(float (&s)[BN / 8][4], const float (&dp)[BN / 8][4], float sl2, float lse_a, float lse_b,
                                      float dl_a, float dl_b, Window wa, Window wb) {
#pragma unroll
  for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float pr = ex2(fmaf(s[n][e], sl2, e < 2 ? -lse_a : -lse_b));
      if constexpr (kMask) {
        if (!(e < 2 ? wa : wb).sees(8 * n + (e & 1))) pr = 0.f;
      }
      s[n][e] = pr * (dp[n][e] - (e < 2 ? dl_a : dl_b));
    }
  }
}

// The dK/dV kernels' Pᵀ and dSᵀ over one query tile for one warp (attention_lean.cu's and attention_wgmma.cu's): from
// Sᵀ and dPᵀ (C fragments: s[n][0..1] key ja, queries ts + 8n + 2tig + {0, 1}; s[n][2..3] key jb) and the tile's
// lse (natural log) and Δ in shared memory, Pᵀ = 2^(s·c − lse·log2 e) masked (kMask) into s, dSᵀ = Pᵀ∘(dPᵀ − Δ) into dp.
template <int BQ, bool kMask>
__device__ __forceinline__ void dkv_p_ds(float (&s)[BQ / 8][4], float (&dp)[BQ / 8][4], const float* Ls, const float* Ds,
                                         float sl2, Window wa, Window wb, int tig) {
#pragma unroll
  for (int n = 0; n < BQ / 8; ++n) {
    const int c = 8 * n + 2 * tig;
    const float2 l2 = *reinterpret_cast<const float2*>(Ls + c);  // lse (natural log), from the prefetch
    const float2 d2 = *reinterpret_cast<const float2*>(Ds + c);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float pr = ex2(fmaf(s[n][e], sl2, -((e & 1) ? l2.y : l2.x) * kLog2e));
      if constexpr (kMask) {
        if (!(e < 2 ? wa : wb).sees(8 * n + (e & 1))) pr = 0.f;
      }
      s[n][e] = pr;
      dp[n][e] = pr * (dp[n][e] - ((e & 1) ? d2.y : d2.x));
    }
  }
}

}  // namespace
}  // namespace cuda
}  // namespace instill
