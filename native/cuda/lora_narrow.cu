// LoRA's narrow products on the CUDA cores (lora_narrow.h): the four products of
// lora_linear whose one side is the rank r (16 in practice), which cuBLASLt runs
// at a fraction of the memory bandwidth they need (1B step, cuda runs 11-12:
// 11-16 us for an 8 MB operand where reading it takes about 2.5 us; 112 calls a
// step of each of the four).
//
// narrow_rows   out (N, R) = alpha · X · F,  X (N, K) bf16, F (K, R) f32
//               u = x·Aᵀ (F = Aᵀ) and g = dy·B (F = B), with the scaled bf16 copy
//               (s·u into [x | s·u], s·g into [dy | s·g]) written by the same pass;
//               given the f32 activation (x32), the pass is also its pack into bf16.
//   CTA: 8 warps × 64 rows; lane = rows l and l+32, warp = a 32-wide k slice of each 256-wide
//   chunk of K. F's chunk (256 × 16 f32) is staged in shared memory and read as a
//   broadcast (every lane of a warp is at the same k). Each thread keeps 2 × 16 sums;
//   the 8 warps' sums are added in warp order through shared memory. K is split
//   over gridDim.y when the rows alone give too few CTAs; the last CTA of a tile to
//   finish then adds the splits' partials in split order (last_split). Deterministic:
//   the only atomic counts CTAs, no sum depends on arrival order.
// narrow_cols   out = alpha · Gᵀ·X (+ beta · out),  G (N, R) f32, X (N, C) f32 | bf16
//               dA = s·gᵀ·x (R, C) and dB = s·dyᵀ·u (written transposed: (C, R)).
//   CTA: 8 warps × 64 columns; lane = columns l and l+32 (coalesced rows of X), warp =
//   a 16-row slice of each 128-row chunk of N; G's chunk (128 × 16) staged as above.
//   N is split over gridDim.y when the columns give too few CTAs (partials again
//   added in split order by the tile's last CTA).
// Ranks above 16 take several 16-wide r tiles (gridDim.z), each reading X again.
// Precision: bf16 X as stored (the buffers lora_linear already rounded), F and G
// in f32, f32 sums: closer to f32 than the bf16 × bf16 products they replace.
#include "cuda/lora_narrow.h"

#include <algorithm>

namespace instill {
namespace cuda {

namespace {

constexpr int kWarps = 8, kThreads = 32 * kWarps;
constexpr int kRT = 16;             // r per tile (accumulators per thread)
constexpr int kRedStride = 20;      // floats per (warp, lane) row of the reduction buffer: float4-aligned, no bank conflicts
constexpr int kChunkK = 256;        // narrow_rows: K per staged chunk of F (32 per warp)
constexpr int kChunkN = 128;        // narrow_cols: N per staged chunk of G (16 per warp: 16 rows × 2 columns of loads in flight)
constexpr int kPer = 2;             // rows (narrow_rows) or columns (narrow_cols) per lane: each staged factor row serves 2

// Splits of the reduced dimension (in chunks): enough CTAs for about two waves, each split at least one chunk.
int64_t splits(int64_t ctas, int64_t chunks, int64_t& chunks_per_split) {
  const int64_t want = std::max<int64_t>(1, (2 * sm_count() + ctas - 1) / ctas);
  const int64_t s = std::min<int64_t>(want, std::max<int64_t>(chunks, 1));
  chunks_per_split = std::max<int64_t>(1, (chunks + s - 1) / s);
  return std::max<int64_t>(1, (chunks + chunks_per_split - 1) / chunks_per_split);
}

__device__ __forceinline__ void bf16x8_to_f32(const uint4& v, float* f) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __bfloat1622float2(h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}

// acc[p][j] += x[p][e] · row[j] for the kPer rows (or columns) of a lane; row is a 16-float shared-memory
// row read as four float4 broadcasts, each used kPer times.
template <int W>
__device__ __forceinline__ void fma_rows(float (*acc)[kRT], const float (*x)[W], int e, const float* row) {
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const float4 f = reinterpret_cast<const float4*>(row)[q];
#pragma unroll
    for (int p = 0; p < kPer; ++p) {
      const float v = x[p][e];
      acc[p][4 * q] += v * f.x;
      acc[p][4 * q + 1] += v * f.y;
      acc[p][4 * q + 2] += v * f.z;
      acc[p][4 * q + 3] += v * f.w;
    }
  }
}

// The warps' sums, added in warp order: red holds [warp][32·kPer positions][kRedStride]; a lane's p-th row
// (or column) is position p·32 + lane.
__device__ __forceinline__ void stash(float* red, const float (*acc)[kRT]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int p = 0; p < kPer; ++p) {
    float* dst = red + (warp * 32 * kPer + p * 32 + lane) * kRedStride;
#pragma unroll
    for (int q = 0; q < 4; ++q)
      reinterpret_cast<float4*>(dst)[q] = make_float4(acc[p][4 * q], acc[p][4 * q + 1], acc[p][4 * q + 2], acc[p][4 * q + 3]);
  }
}
__device__ __forceinline__ float warps_sum(const float* red, int pos, int j) {
  float s = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) s += red[(w * 32 * kPer + pos) * kRedStride + j];
  return s;
}

// Split reductions: each of the gridDim.y CTAs of a tile writes its partial sums, then counts itself in
// the tile's counter; the one that comes last adds all the partials in split order (so the result does
// not depend on which came last) and resets the counter for the next launch. The counters (tile_counters)
// start at zero and are left at zero. The fences make each CTA's partials visible before it is counted,
// and the last CTA reads them through L2 (__ldcg).
__device__ __forceinline__ bool last_split(int* counter) {
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(counter, 1) == static_cast<int>(gridDim.y) - 1;
    if (last) *counter = 0;
  }
  __syncthreads();
  if (last) __threadfence();
  return last;
}

// ---- narrow_rows ----

// Shared memory of narrow_rows_kernel: F's chunk while the chunks run, then the warps' sums.
constexpr int kRowsSmem = std::max(kChunkK * kRT, kWarps * 32 * kPer * kRedStride);

// kF32: X is read from x32 (f32, row stride ld32; vec32: rows 16-byte aligned) and rounded to bf16 as it
// is read; the rounded X is written into x (by the r tile 0 CTAs) and is what the sums use, so this pass is
// also the pack of X (one read of the f32 activation instead of a pack and a second read).
template <bool kF32>
__global__ void __launch_bounds__(kThreads, 2) narrow_rows_kernel(__nv_bfloat16* __restrict__ x, int64_t ldx, int64_t N,
                                                               int64_t K, int64_t k_per_split, const float* __restrict__ f,
                                                               int64_t ldf, bool f_trans, int64_t R, float alpha,
                                                               float* __restrict__ out, float* __restrict__ part,
                                                               __nv_bfloat16* __restrict__ out16, int64_t ld16,
                                                               float scale16, const float* __restrict__ x32, int64_t ld32,
                                                               bool vec32, int* __restrict__ counters) {
  __shared__ __align__(16) float smem[kRowsSmem];
  float* fs = smem;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * 32 * kPer;
  const int64_t r0 = static_cast<int64_t>(blockIdx.z) * kRT;
  const int64_t kbeg = static_cast<int64_t>(blockIdx.y) * k_per_split, kend = min(K, kbeg + k_per_split);
  __nv_bfloat16* xrow[kPer];  // rows past N compute on row N-1 and are never written
  const float* srow[kPer];     // kF32: the f32 source rows
  bool store[kPer];            // kF32: this thread writes its rounded row p
#pragma unroll
  for (int p = 0; p < kPer; ++p) {
    const int64_t n = min(row0 + p * 32 + lane, N - 1);
    xrow[p] = x + n * ldx;
    srow[p] = kF32 ? x32 + n * ld32 : nullptr;
    store[p] = kF32 && blockIdx.z == 0 && row0 + p * 32 + lane < N;
  }
  float acc[kPer][kRT];
#pragma unroll
  for (int p = 0; p < kPer; ++p)
#pragma unroll
    for (int j = 0; j < kRT; ++j) acc[p][j] = 0.f;

  for (int64_t c0 = kbeg; c0 < kend; c0 += kChunkK) {
    __syncthreads();  // the previous chunk's reads of fs are done
    for (int i = threadIdx.x; i < kChunkK * kRT; i += kThreads) {
      // F(k, r): f[r·ldf + k] (Aᵀ: consecutive threads walk k, coalesced) or f[k·ldf + r] (B: walk r)
      const int kk = f_trans ? i % kChunkK : i / kRT, j = f_trans ? i / kChunkK : i % kRT;
      const int64_t k = c0 + kk, r = r0 + j;
      float v = 0.f;
      if (k < kend && r < R) v = f_trans ? f[r * ldf + k] : f[k * ldf + r];
      fs[kk * kRT + j] = v;
    }
    __syncthreads();
    const int64_t k0 = c0 + warp * 32, k1 = min(kend, k0 + 32);
    if (kF32 && vec32 && k1 - k0 == 32) {  // two halves of 16 k: 4 × kPer float4 loads in flight, round, store, FMAs
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t kh = k0 + 16 * h;
        float4 v[kPer][4];
#pragma unroll
        for (int p = 0; p < kPer; ++p)
#pragma unroll
          for (int q = 0; q < 4; ++q) v[p][q] = __ldcs(reinterpret_cast<const float4*>(srow[p] + kh) + q);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          float xf[kPer][4];
#pragma unroll
          for (int p = 0; p < kPer; ++p) {
            const __nv_bfloat162 lo = __floats2bfloat162_rn(v[p][q].x, v[p][q].y);
            const __nv_bfloat162 hi = __floats2bfloat162_rn(v[p][q].z, v[p][q].w);
            if (store[p]) {
              uint2 raw;
              raw.x = *reinterpret_cast<const uint32_t*>(&lo);
              raw.y = *reinterpret_cast<const uint32_t*>(&hi);
              reinterpret_cast<uint2*>(xrow[p] + kh)[q] = raw;
            }
            const float2 a = __bfloat1622float2(lo), b = __bfloat1622float2(hi);
            xf[p][0] = a.x; xf[p][1] = a.y; xf[p][2] = b.x; xf[p][3] = b.y;
          }
#pragma unroll
          for (int e = 0; e < 4; ++e) fma_rows(acc, xf, e, fs + (kh - c0 + 4 * q + e) * kRT);
        }
      }
    } else if (kF32) {
      for (int64_t k = k0; k < k1; ++k) {
        float xf[kPer][1];
#pragma unroll
        for (int p = 0; p < kPer; ++p) {
          const __nv_bfloat16 b = __float2bfloat16(srow[p][k]);
          if (store[p]) xrow[p][k] = b;
          xf[p][0] = __bfloat162float(b);
        }
        fma_rows(acc, xf, 0, fs + (k - c0) * kRT);
      }
    } else if (k1 - k0 == 32) {  // 4 × kPer 16-byte loads in flight, then 32 × 16 × kPer FMAs
      uint4 v[kPer][4];
#pragma unroll
      for (int p = 0; p < kPer; ++p)
#pragma unroll
        for (int q = 0; q < 4; ++q) v[p][q] = __ldg(reinterpret_cast<const uint4*>(xrow[p] + k0) + q);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        float xf[kPer][8];
#pragma unroll
        for (int p = 0; p < kPer; ++p) bf16x8_to_f32(v[p][q], xf[p]);
#pragma unroll
        for (int e = 0; e < 8; ++e) fma_rows(acc, xf, e, fs + (k0 - c0 + 8 * q + e) * kRT);
      }
    } else {
      for (int64_t k = k0; k < k1; ++k) {
        float xf[kPer][1];
#pragma unroll
        for (int p = 0; p < kPer; ++p) xf[p][0] = __bfloat162float(xrow[p][k]);
        fma_rows(acc, xf, 0, fs + (k - c0) * kRT);
      }
    }
  }
  __syncthreads();  // fs becomes the reduction buffer
  stash(smem, acc);
  __syncthreads();
  // 32·kPer rows × 16 r of this CTA
  for (int o = threadIdx.x; o < 32 * kPer * kRT; o += kThreads) {
    const int row = o / kRT, j = o % kRT;
    const int64_t n = row0 + row, r = r0 + j;
    if (n >= N || r >= R) continue;
    const float s = warps_sum(smem, row, j);
    if (part) {
      part[(static_cast<int64_t>(blockIdx.y) * N + n) * R + r] = s;
    } else {
      out[n * R + r] = alpha * s;
      if (out16) out16[n * ld16 + r] = __float2bfloat16(scale16 * alpha * s);
    }
  }
  if (!part || !last_split(counters + blockIdx.z * gridDim.x + blockIdx.x)) return;
  for (int o = threadIdx.x; o < 32 * kPer * kRT; o += kThreads) {  // the last split's CTA: the sums, in split order
    const int64_t n = row0 + o / kRT, r = r0 + o % kRT;
    if (n >= N || r >= R) continue;
    float s = 0.f;
    for (unsigned k = 0; k < gridDim.y; ++k) s += __ldcg(part + (static_cast<int64_t>(k) * N + n) * R + r);
    out[n * R + r] = alpha * s;
    if (out16) out16[n * ld16 + r] = __float2bfloat16(scale16 * alpha * s);
  }
}

// ---- narrow_cols ----

constexpr int kColsSmem = std::max(kChunkN * kRT, kWarps * 32 * kPer * kRedStride);

template <typename T>
__global__ void __launch_bounds__(kThreads) narrow_cols_kernel(const float* __restrict__ g, int64_t N, int64_t R,
                                                               int64_t n_per_split, const T* __restrict__ x, int64_t ldx,
                                                               int64_t C, float alpha, float beta, float* __restrict__ out,
                                                               bool out_cr, float* __restrict__ part,
                                                               int* __restrict__ counters) {
  __shared__ __align__(16) float smem[kColsSmem];
  float* gs = smem;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * 32 * kPer;
  int64_t cc[kPer];  // columns past C read column C-1 and are never written
#pragma unroll
  for (int p = 0; p < kPer; ++p) cc[p] = min(col0 + p * 32 + lane, C - 1);
  const int64_t r0 = static_cast<int64_t>(blockIdx.z) * kRT;
  const int64_t nbeg = static_cast<int64_t>(blockIdx.y) * n_per_split, nend = min(N, nbeg + n_per_split);
  constexpr int kRowsPerWarp = kChunkN / kWarps;
  float acc[kPer][kRT];
#pragma unroll
  for (int p = 0; p < kPer; ++p)
#pragma unroll
    for (int j = 0; j < kRT; ++j) acc[p][j] = 0.f;

  for (int64_t c0 = nbeg; c0 < nend; c0 += kChunkN) {
    __syncthreads();
    for (int i = threadIdx.x; i < kChunkN * kRT; i += kThreads) {
      const int nn = i / kRT, j = i % kRT;
      const int64_t n = c0 + nn, r = r0 + j;
      gs[i] = (n < nend && r < R) ? g[n * R + r] : 0.f;
    }
    __syncthreads();
    const int64_t n0 = c0 + warp * kRowsPerWarp, n1 = min(nend, n0 + kRowsPerWarp);
    if (n1 - n0 == kRowsPerWarp) {  // kRowsPerWarp × kPer loads in flight
      float v[kRowsPerWarp][kPer];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i)
#pragma unroll
        for (int p = 0; p < kPer; ++p) v[i][p] = static_cast<float>(x[(n0 + i) * ldx + cc[p]]);
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) {
        float xf[kPer][1];
#pragma unroll
        for (int p = 0; p < kPer; ++p) xf[p][0] = v[i][p];
        fma_rows(acc, xf, 0, gs + (n0 - c0 + i) * kRT);
      }
    } else {
      for (int64_t n = n0; n < n1; ++n) {
        float xf[kPer][1];
#pragma unroll
        for (int p = 0; p < kPer; ++p) xf[p][0] = static_cast<float>(x[n * ldx + cc[p]]);
        fma_rows(acc, xf, 0, gs + (n - c0) * kRT);
      }
    }
  }
  __syncthreads();  // gs becomes the reduction buffer
  stash(smem, acc);
  __syncthreads();
  // 32·kPer columns × 16 r; for the (R, C) layout consecutive threads take consecutive columns
  constexpr int kCols = 32 * kPer;
  for (int o = threadIdx.x; o < kCols * kRT; o += kThreads) {
    const int col = out_cr ? o / kRT : o % kCols, j = out_cr ? o % kRT : o / kCols;
    const int64_t cn = col0 + col, r = r0 + j;
    if (cn >= C || r >= R) continue;
    const float s = warps_sum(smem, col, j);
    if (part) {
      part[(static_cast<int64_t>(blockIdx.y) * R + r) * C + cn] = s;
    } else {
      float* dst = out + (out_cr ? cn * R + r : r * C + cn);
      *dst = alpha * s + (beta != 0.f ? beta * *dst : 0.f);
    }
  }
  if (!part || !last_split(counters + blockIdx.z * gridDim.x + blockIdx.x)) return;
  for (int o = threadIdx.x; o < kCols * kRT; o += kThreads) {  // the last split's CTA: the sums, in split order
    const int col = out_cr ? o / kRT : o % kCols, j = out_cr ? o % kRT : o / kCols;
    const int64_t cn = col0 + col, r = r0 + j;
    if (cn >= C || r >= R) continue;
    float s = 0.f;
    for (unsigned k = 0; k < gridDim.y; ++k) s += __ldcg(part + (static_cast<int64_t>(k) * R + r) * C + cn);
    float* dst = out + (out_cr ? cn * R + r : r * C + cn);
    *dst = alpha * s + (beta != 0.f ? beta * *dst : 0.f);
  }
}

// bf16 has no implicit float conversion in every toolkit: a load helper for the template.
struct Bf16 {
  __nv_bfloat16 v;
  __device__ explicit operator float() const { return __bfloat162float(v); }
};
static_assert(sizeof(Bf16) == sizeof(__nv_bfloat16), "Bf16 wraps one bf16");

// One zeroed int per tile (CTA column of a split launch), for last_split; allocated once and held for the
// process's life (like cuBLASLt's workspace). Launches with more tiles than this do not split.
constexpr int64_t kMaxTiles = int64_t{1} << 16;
int* tile_counters() {
  static int* p = [] {
    int* q = nullptr;
    INSTILL_CUDA_CHECK(cudaMalloc(&q, kMaxTiles * sizeof(int)));
    INSTILL_CUDA_CHECK(cudaMemsetAsync(q, 0, kMaxTiles * sizeof(int), stream()));
    return q;
  }();
  return p;
}

}  // namespace

void narrow_rows(const NarrowRowsArgs& a) {
  if (a.N <= 0 || a.R <= 0) return;
  if (!aligned(a.x, 16) || a.ldx % 8 != 0) fail(ErrorCode::Internal, "narrow_rows: X rows must start 16-byte aligned");
  if (a.out16 && a.ld16 < a.R) fail(ErrorCode::Internal, "narrow_rows: the bf16 output's row stride is below R");
  const bool vec32 = a.x32 && aligned(a.x32, 16) && a.ld32 % 4 == 0;
  const int64_t rtiles = (a.R + kRT - 1) / kRT, row_blocks = (a.N + 32 * kPer - 1) / (32 * kPer);
  const int64_t chunks = (a.K + kChunkK - 1) / kChunkK;
  int64_t chunks_per_split = chunks;  // one split unless splits() says more
  const int64_t S = row_blocks * rtiles > kMaxTiles ? 1 : splits(row_blocks * rtiles, chunks, chunks_per_split);
  if (row_blocks > 2147483647 || rtiles > 65535) fail(ErrorCode::Unsupported, "narrow_rows: too many rows or ranks");
  Tensor part = S > 1 ? Tensor::empty({S * a.N * a.R}, DType::F32, Device::CUDA) : Tensor();
  const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(S), static_cast<unsigned>(rtiles));
  float* pp = S > 1 ? part.data_as<float>() : nullptr;
  int* counters = S > 1 ? tile_counters() : nullptr;
  const int64_t kps = chunks_per_split * kChunkK;
  if (a.x32) {
    narrow_rows_kernel<true><<<grid, kThreads, 0, stream()>>>(a.x, a.ldx, a.N, a.K, kps, a.f, a.ldf, a.f_trans, a.R, a.alpha,
                                                              a.out, pp, a.out16, a.ld16, a.scale16, a.x32, a.ld32, vec32,
                                                              counters);
  } else {
    narrow_rows_kernel<false><<<grid, kThreads, 0, stream()>>>(a.x, a.ldx, a.N, a.K, kps, a.f, a.ldf, a.f_trans, a.R, a.alpha,
                                                               a.out, pp, a.out16, a.ld16, a.scale16, nullptr, 0, false,
                                                               counters);
  }
  check_launch("narrow_rows_kernel");
}

void narrow_cols(const NarrowColsArgs& a) {
  if (a.C <= 0 || a.R <= 0) return;
  const int64_t rtiles = (a.R + kRT - 1) / kRT, col_blocks = (a.C + 32 * kPer - 1) / (32 * kPer);
  const int64_t chunks = (a.N + kChunkN - 1) / kChunkN;
  int64_t chunks_per_split = chunks;  // one split unless splits() says more
  const int64_t S = col_blocks * rtiles > kMaxTiles ? 1 : splits(col_blocks * rtiles, chunks, chunks_per_split);
  if (col_blocks > 2147483647 || rtiles > 65535) fail(ErrorCode::Unsupported, "narrow_cols: too many columns or ranks");
  Tensor part = S > 1 ? Tensor::empty({S * a.R * a.C}, DType::F32, Device::CUDA) : Tensor();
  float* p = S > 1 ? part.data_as<float>() : nullptr;
  int* counters = S > 1 ? tile_counters() : nullptr;
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(S), static_cast<unsigned>(rtiles));
  const int64_t n_per_split = chunks_per_split * kChunkN;
  if (a.xe == Elem::BF16) {
    narrow_cols_kernel<Bf16><<<grid, kThreads, 0, stream()>>>(a.g, a.N, a.R, n_per_split,
                                                              static_cast<const Bf16*>(a.x), a.ldx, a.C, a.alpha,
                                                              a.beta, a.out, a.out_cr, p, counters);
  } else if (a.xe == Elem::F32) {
    narrow_cols_kernel<float><<<grid, kThreads, 0, stream()>>>(a.g, a.N, a.R, n_per_split,
                                                               static_cast<const float*>(a.x), a.ldx, a.C, a.alpha,
                                                               a.beta, a.out, a.out_cr, p, counters);
  } else {
    fail(ErrorCode::Internal, "narrow_cols: X must be f32 or bf16");
  }
  check_launch("narrow_cols_kernel");
}

}  // namespace cuda
}  // namespace instill
