// attention on CUDA, the f32 CUDA-core kernels: the fallback of attention.cu for
// what the tensor-core path (attention_flash.cu) does not take (head dims other than
// 64 and 128, unaligned tensors) and, with INSTILL_CUDA_ATTENTION=simple, the exact
// f32 reference on the GPU.
//
// Kernels (8 warps per block, one query row — or one key row — per warp, tiles
// of 32 rows through shared memory with rows padded to D+1 floats so lane l
// reading row l hits distinct banks):
//   attention_forward_kernel   warp = query i of head h; lane l scores key
//                              tile_start + l; running max / sum per warp; lane
//                              owns output dims lane, lane+32, ... (D <= 128)
//   attention_delta_kernel     Δ_i = dout_i · out_i per (i, h)
//   attention_delta_rows_kernel the same, a warp a token row (INSTILL_CUDA_NEXT=delta_rows: bf16, D 64 or 128)
//   attention_dq_kernel        as forward: p = exp(s − lse_i), ds = p (dout_i·v_j − Δ_i),
//                              dq_i = scale Σ ds k_j
//   attention_dkv_kernel       warp = key j of KV head g; loops over the H/KVH query
//                              heads of the group and the query tiles that can see j;
//                              dv_j = Σ p dout_i, dk_j = scale Σ ds q_i.
// Every output is written (=), each element by exactly one lane: deterministic,
// no atomics.
#include <algorithm>

#include "cuda/attention_kernels.cuh"
#include "cuda/common.cuh"
#include "runtime/op_profile.h"

namespace instill {
namespace cuda {

namespace {

constexpr int kWarps = 8;
constexpr int kTile = 32;
constexpr int kMaxD = 128;
constexpr int kPerLane = kMaxD / 32;

// acc[t] += Σ_jj w_jj · tile[jj][lane + 32t]: each lane's weight w (for its key or query jj = lane) broadcast
// to the warp, against the kTile rows of a tile padded to D + 1 (O += P·V, dQ += dS·K).
__device__ __forceinline__ void add_weighted_rows(float (&acc)[kPerLane], float w, const float* tile, int64_t D,
                                                  int lane) {
  for (int jj = 0; jj < kTile; ++jj) {
    const float wb = __shfl_sync(0xffffffffu, w, jj);
    const float* row = tile + jj * (D + 1);
#pragma unroll
    for (int t = 0; t < kPerLane; ++t)
      if (lane + 32 * t < D) acc[t] += wb * row[lane + 32 * t];
  }
}

// Loads rows [ts, ts+32) of a (N, KVH, D) tensor's head g into smem (rows padded to D+1); zeros past `last`.
__device__ __forceinline__ void load_tile(float* dst, const float* src, int64_t ts, int64_t last, int64_t heads,
                                          int64_t g, int64_t D) {
  for (int idx = threadIdx.x; idx < kTile * D; idx += blockDim.x) {
    const int r = idx / static_cast<int>(D), d = idx % static_cast<int>(D);
    const int64_t j = ts + r;
    dst[r * (D + 1) + d] = j <= last ? src[(j * heads + g) * D + d] : 0.f;
  }
}

// Forward (backward = false) or dq (backward = true): one warp per query row.
template <bool kBackward>
__global__ void __launch_bounds__(kWarps * 32) attention_query_kernel(const AttnParams a) {
  pdl_enter();
  extern __shared__ float smem[];
  const int64_t D = a.D;
  float* Ks = smem;                              // (32, D+1)
  float* Vs = Ks + kTile * (D + 1);              // (32, D+1)
  float* Qs = Vs + kTile * (D + 1);              // (8, D)  this block's query rows
  float* Os = Qs + kWarps * D;                   // (8, D)  dout rows (backward)
  __shared__ int64_t range[2];

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t h = blockIdx.y, g = h / (a.H / a.KVH);
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kWarps;
  const int64_t i = i0 + warp;
  const bool valid = i < a.N;
  if (threadIdx.x == 0) {
    int64_t lo = INT64_MAX, hi = -1;
    for (int w = 0; w < kWarps && i0 + w < a.N; ++w) {
      lo = min(lo, key_lo(a.seg_begin, i0 + w, a.window));
      hi = i0 + w;
    }
    range[0] = lo;
    range[1] = hi;
  }
  const int64_t lo_i = valid ? key_lo(a.seg_begin, i, a.window) : 0;
  if (valid) {
    for (int64_t d = lane; d < D; d += 32) {
      Qs[warp * D + d] = a.q[(i * a.H + h) * D + d];
      if (kBackward) Os[warp * D + d] = a.dout[(i * a.H + h) * D + d];
    }
  }
  __syncthreads();
  const int64_t blo = range[0], bhi = range[1];

  float acc[kPerLane];
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) acc[t] = 0.f;
  float m = -INFINITY, l = 0.f;
  const float lse_i = (kBackward && valid) ? a.lse_in[i * a.H + h] : 0.f;
  const float delta_i = (kBackward && valid) ? a.delta[i * a.H + h] : 0.f;

  for (int64_t ts = blo; ts <= bhi; ts += kTile) {
    load_tile(Ks, a.k, ts, bhi, a.KVH, g, D);
    load_tile(Vs, a.v, ts, bhi, a.KVH, g, D);
    __syncthreads();
    if (valid && ts <= i && ts + kTile > lo_i) {
      const int64_t j = ts + lane;
      const bool vis = j >= lo_i && j <= i;
      float s = 0.f;
      const float* kr = Ks + lane * (D + 1);
      const float* qr = Qs + warp * D;
      for (int64_t d = 0; d < D; ++d) s += qr[d] * kr[d];
      s *= a.scale;
      if (!kBackward) {
        const float sv = vis ? s : -INFINITY;
        const float m_new = fmaxf(m, warp_max(sv));  // finite: the tile holds a visible key
        const float corr = expf(m - m_new);           // m = -inf on the first tile: 0
        const float pj = vis ? expf(sv - m_new) : 0.f;
        l = l * corr + warp_sum(pj);
#pragma unroll
        for (int t = 0; t < kPerLane; ++t) acc[t] *= corr;
        add_weighted_rows(acc, pj, Vs, D, lane);
        m = m_new;
      } else {
        float dp = 0.f;
        const float* vr = Vs + lane * (D + 1);
        const float* orow = Os + warp * D;
        for (int64_t d = 0; d < D; ++d) dp += orow[d] * vr[d];
        const float pj = vis ? expf(s - lse_i) : 0.f;
        add_weighted_rows(acc, pj * (dp - delta_i), Ks, D, lane);  // dS = P∘(dP − Δ)
      }
    }
    __syncthreads();
  }
  if (!valid) return;
  if (!kBackward) {
    const float inv = 1.f / l;  // l >= 1: query i always sees itself
#pragma unroll
    for (int t = 0; t < kPerLane; ++t)
      if (lane + 32 * t < D) a.out[(i * a.H + h) * D + lane + 32 * t] = acc[t] * inv;
    if (lane == 0) a.lse[i * a.H + h] = m + logf(l);
  } else {
#pragma unroll
    for (int t = 0; t < kPerLane; ++t)
      if (lane + 32 * t < D) a.dq[(i * a.H + h) * D + lane + 32 * t] = acc[t] * a.scale;
  }
}

// T: float, or bf16 (bf16 activations: the same sums of the widened values).
template <typename T>
__global__ void attention_delta_kernel(const T* dout, const T* out, int64_t rows, int64_t H, int64_t D, int64_t ldo,
                                       float* delta) {  // dout (rows = N·H, D); out (N, ldo) its H·D first; delta (N·H)
  pdl_enter();
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const T* o = out + (ldo == H * D ? r * D : (r / H) * ldo + (r % H) * D);  // (the division only for a packed out)
  float s = 0.f;
  for (int64_t d = lane; d < D; d += 32) s += load1(dout + r * D + d) * load1(o + d);
  s = warp_sum(s);
  if (lane == 0) delta[r] = s;
}

// INSTILL_CUDA_NEXT `delta_rows` (bf16 activations, D = 8·kLanes: 64 or 128 here): Δ a warp a token row, every
// head of it, where the kernel above takes a warp a (row, head) with 2-byte loads and, for a packed out, two 64-bit
// divisions a row. Here each head's D/8 16-byte chunks sit on kLanes neighbouring lanes (32 / kLanes heads at once)
// and the sum is made in the kernel above's order, so Δ has its bits: that kernel's lane l (< 32) chains
// fma(dout[l + 32t], out[l + 32t], ·) over t, starting from fma(·, ·, 0), and its butterfly adds lane l to lane l ^ 16,
// ^ 8, ^ 4, ^ 2, ^ 1. Element e = l + 32t is chunk lane e / 8 = l / 8 + 4t, slot e % 8 here, so lane a < 4 of a
// head chains the chunks of lanes a + 4t (shuffled over), holding the old lanes 8a .. 8a + 7; ^ 16 and ^ 8 pair its
// lanes a ^ 2 and a ^ 1, and ^ 4, ^ 2, ^ 1 its slots.
__device__ __forceinline__ uint4 shfl4(const uint4& w, int src) {
  return make_uint4(__shfl_sync(0xffffffffu, w.x, src), __shfl_sync(0xffffffffu, w.y, src),
                    __shfl_sync(0xffffffffu, w.z, src), __shfl_sync(0xffffffffu, w.w, src));
}
template <int kLanes>
__global__ void attention_delta_rows_kernel(const __nv_bfloat16* __restrict__ dout, const __nv_bfloat16* __restrict__ out,
                                            int64_t N, int H, int64_t ldo, float* __restrict__ delta) {
  pdl_enter();
  constexpr int D = 8 * kLanes, kHeadsAt = 32 / kLanes, kChain = D / 32;
  static_assert(kLanes >= 4 && kLanes <= 32 && 32 % kLanes == 0, "a head's chunks: 4 to 32 lanes of one warp");
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31, sub = lane % kLanes;
  if (i >= N) return;  // (a whole warp: the shuffles below see all 32 lanes)
  const __nv_bfloat16* drow = dout + i * H * D;
  const __nv_bfloat16* orow = out + i * ldo;
  for (int h0 = 0; h0 < H; h0 += kHeadsAt) {
    const int h = h0 + lane / kLanes;
    uint4 dw = make_uint4(0, 0, 0, 0), ow = make_uint4(0, 0, 0, 0);
    if (h < H) {
      dw = *reinterpret_cast<const uint4*>(drow + h * D + sub * 8);
      ow = *reinterpret_cast<const uint4*>(orow + h * D + sub * 8);
    }
    float acc[8], df[8], of[8];
    unpack8(dw, df);
    unpack8(ow, of);
#pragma unroll
    for (int b = 0; b < 8; ++b) acc[b] = fmaf(df[b], of[b], 0.f);
#pragma unroll
    for (int t = 1; t < kChain; ++t) {  // lane a + 4t's chunk (its own head's: a + 4t < kLanes for a < 4)
      unpack8(shfl4(dw, lane + 4 * t), df);
      unpack8(shfl4(ow, lane + 4 * t), of);
#pragma unroll
      for (int b = 0; b < 8; ++b) acc[b] = fmaf(df[b], of[b], acc[b]);
    }
#pragma unroll
    for (int b = 0; b < 8; ++b) acc[b] += __shfl_down_sync(0xffffffffu, acc[b], 2);  // ^ 16: lanes 0, 1 take 2, 3
#pragma unroll
    for (int b = 0; b < 8; ++b) acc[b] += __shfl_down_sync(0xffffffffu, acc[b], 1);  // ^ 8: lane 0 takes 1
#pragma unroll
    for (int b = 0; b < 4; ++b) acc[b] += acc[b + 4];  // ^ 4
    acc[0] += acc[2];  // ^ 2
    acc[1] += acc[3];
    if (sub == 0 && h < H) delta[i * H + h] = acc[0] + acc[1];  // ^ 1
  }
}

__global__ void __launch_bounds__(kWarps * 32) attention_dkv_kernel(const AttnParams a) {
  pdl_enter();
  extern __shared__ float smem[];
  const int64_t D = a.D;
  float* Qs = smem;                     // (32, D+1) query rows of the tile
  float* Os = Qs + kTile * (D + 1);     // (32, D+1) dout rows
  float* Kw = Os + kTile * (D + 1);     // (8, D) this block's key rows
  float* Vw = Kw + kWarps * D;          // (8, D)
  float* Ls = Vw + kWarps * D;          // (32) lse
  float* Ds = Ls + kTile;               // (32) delta
  __shared__ int64_t range[2];

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t g = blockIdx.y, rep = a.H / a.KVH;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kWarps;
  const int64_t j = j0 + warp;
  const bool valid = j < a.N;
  if (threadIdx.x == 0) {
    int64_t hi = -1;
    for (int w = 0; w < kWarps && j0 + w < a.N; ++w) hi = max(hi, query_hi(a.seg_end, j0 + w, a.window));
    range[0] = j0;
    range[1] = hi;
  }
  const int64_t hi_j = valid ? query_hi(a.seg_end, j, a.window) : -1;
  if (valid) {
    for (int64_t d = lane; d < D; d += 32) {
      Kw[warp * D + d] = a.k[(j * a.KVH + g) * D + d];
      Vw[warp * D + d] = a.v[(j * a.KVH + g) * D + d];
    }
  }
  __syncthreads();
  const int64_t blo = range[0], bhi = range[1];

  float dk[kPerLane], dv[kPerLane];
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) dk[t] = dv[t] = 0.f;

  for (int64_t h = g * rep; h < (g + 1) * rep; ++h) {
    for (int64_t ts = blo; ts <= bhi; ts += kTile) {
      load_tile(Qs, a.q, ts, bhi, a.H, h, D);
      load_tile(Os, a.dout, ts, bhi, a.H, h, D);
      if (threadIdx.x < kTile) {
        const int64_t i = ts + threadIdx.x;
        Ls[threadIdx.x] = i <= bhi ? a.lse_in[i * a.H + h] : 0.f;
        Ds[threadIdx.x] = i <= bhi ? a.delta[i * a.H + h] : 0.f;
      }
      __syncthreads();
      if (valid && ts <= hi_j && ts + kTile > j) {
        const int64_t i = ts + lane;
        const bool vis = i >= j && i <= hi_j;
        const float* qr = Qs + lane * (D + 1);
        const float* orow = Os + lane * (D + 1);
        const float* kr = Kw + warp * D;
        const float* vr = Vw + warp * D;
        float s = 0.f, dp = 0.f;
        for (int64_t d = 0; d < D; ++d) {
          s += qr[d] * kr[d];
          dp += orow[d] * vr[d];
        }
        const float p = vis ? expf(s * a.scale - Ls[lane]) : 0.f;
        const float ds = p * (dp - Ds[lane]);
        for (int ii = 0; ii < kTile; ++ii) {
          const float pb = __shfl_sync(0xffffffffu, p, ii);
          const float db = __shfl_sync(0xffffffffu, ds, ii);
          const float* qrow = Qs + ii * (D + 1);
          const float* drow = Os + ii * (D + 1);
#pragma unroll
          for (int t = 0; t < kPerLane; ++t) {
            if (lane + 32 * t < D) {
              dv[t] += pb * drow[lane + 32 * t];
              dk[t] += db * qrow[lane + 32 * t];
            }
          }
        }
      }
      __syncthreads();
    }
  }
  if (!valid) return;
#pragma unroll
  for (int t = 0; t < kPerLane; ++t) {
    if (lane + 32 * t < D) {
      a.dk[(j * a.KVH + g) * D + lane + 32 * t] = dk[t] * a.scale;
      a.dv[(j * a.KVH + g) * D + lane + 32 * t] = dv[t];
    }
  }
}

size_t query_smem(int64_t D) { return sizeof(float) * static_cast<size_t>(2 * kTile * (D + 1) + 2 * kWarps * D); }
size_t dkv_smem(int64_t D) { return sizeof(float) * static_cast<size_t>(2 * kTile * (D + 1) + 2 * kWarps * D + 2 * kTile); }

dim3 grid_rows(int64_t N, int64_t heads) {
  return dim3(static_cast<unsigned>((N + kWarps - 1) / kWarps), static_cast<unsigned>(heads));
}

}  // namespace

void attention_delta(const AttnParams& p, cudaStream_t s) {
  // delta_rows: bf16 activations, D 64 or 128, every row's 16-byte chunks aligned
  if (p.io16 && (p.D == 64 || p.D == 128) && p.H > 0 && aligned16({p.do16, p.out16_in}) && out16_ld(p) % 8 == 0 &&
      next_kernels(Next::DeltaRows)) {
    const OpPart part("delta = rowsum(dO * O), a warp a row (next)", Device::CUDA);
    const unsigned rows = static_cast<unsigned>((p.N + kWarps - 1) / kWarps);
    const int H = static_cast<int>(p.H);
    const int64_t ldo = out16_ld(p);
    if (p.D == 64) launch("attention_delta_rows_kernel", attention_delta_rows_kernel<8>, rows, kWarps * 32, 0, s, p.do16, p.out16_in, p.N, H, ldo, p.delta);
    else launch("attention_delta_rows_kernel", attention_delta_rows_kernel<16>, rows, kWarps * 32, 0, s, p.do16, p.out16_in, p.N, H, ldo, p.delta);
    return;
  }
  const OpPart part("delta = rowsum(dO * O)", Device::CUDA);
  const unsigned grid = static_cast<unsigned>((p.N * p.H + kWarps - 1) / kWarps);
  if (p.io16) launch("attention_delta_kernel", attention_delta_kernel<__nv_bfloat16>, grid, kWarps * 32, 0, s, p.do16,
                     p.out16_in, p.N * p.H, p.H, p.D, out16_ld(p), p.delta);
  else launch("attention_delta_kernel", attention_delta_kernel<float>, grid, kWarps * 32, 0, s, p.dout, p.out_in,
              p.N * p.H, p.H, p.D, p.H * p.D, p.delta);
}

void attention_simple_forward(const AttnParams& p, cudaStream_t s) {
  launch("attention_forward_kernel", attention_query_kernel<false>, grid_rows(p.N, p.H), kWarps * 32, query_smem(p.D),
         s, p);
}

void attention_simple_backward(const AttnParams& p, cudaStream_t s) {
  launch("attention_dq_kernel", attention_query_kernel<true>, grid_rows(p.N, p.H), kWarps * 32, query_smem(p.D), s, p);
  launch("attention_dkv_kernel", attention_dkv_kernel, grid_rows(p.N, p.KVH), kWarps * 32, dkv_smem(p.D), s, p);
}

}  // namespace cuda
}  // namespace instill
