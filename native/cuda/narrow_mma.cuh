// LoRA's narrow products made inside the elementwise kernels that write their input (INSTILL_CUDA_NEXT `norm_u`,
// `norm_g`, `swiglu_g`, `swiglu_u`: rmsnorm.cu, swiglu.cu). Such a kernel takes 16 rows a CTA (one mma.sync m16) of
// 256 threads, and walks the rows' columns in chunks of 256: it writes its own output and stages the chunk, as bf16,
// in shared memory (`Tile`), then warp j adds the chunk's share of the narrow product's columns 8j..8j+8 (at most 64:
// 8 warps) with mma.sync, its B fragments loaded from global memory (L2) before the staging, so that their latency
// overlaps it. At the end s·acc goes, rounded once to bf16, into the output's columns past the written ones.
// Fragment layouts: mma.cuh. Internal linkage.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/mma.cuh"

namespace instill {
namespace cuda {
namespace {

constexpr int kNarrowRows = 16;      // rows a CTA
constexpr int kNarrowThreads = 256;  // 8 warps
constexpr int kNarrowChunk = 256;    // columns staged at a time
constexpr int kNarrowPad = 8;        // a staged row 528 bytes long: a fragment load's 8 rows fall in distinct banks
constexpr int kNarrowMax = 64;       // the narrow product's columns at most: one n-tile of 8 a warp
constexpr int kNarrowSteps = kNarrowChunk / 16;

using Tile = __nv_bfloat16[kNarrowRows][kNarrowChunk + kNarrowPad];
using BFrags = uint32_t[kNarrowSteps][2];

// The B fragments of a chunk (k from c0, `width` columns, a multiple of 16) where B(k, n) = M(n, k) of a row-major bf16
// M (A's rows for u = x·Aᵀ): `row` points at M(n, 2t) for this lane's n = 8·warp + lane / 4, t = lane % 4; two
// 32-bit loads a k-step. Zeros for a warp with no columns (`on` false).
__device__ __forceinline__ void b_frags_rows(BFrags& bf, const __nv_bfloat16* row, int64_t c0, int width, bool on) {
#pragma unroll
  for (int k = 0; k < kNarrowSteps; ++k) {
    bf[k][0] = bf[k][1] = 0u;
    if (on && 16 * k < width) {
      bf[k][0] = *reinterpret_cast<const uint32_t*>(row + c0 + 16 * k);
      bf[k][1] = *reinterpret_cast<const uint32_t*>(row + c0 + 16 * k + 8);
    }
  }
}

// The same where B(k, n) is at col[k·ld] (a column of a row-major (K, ·) B: LoRA's B for g = dy·B): `col` points at
// column n of B's row 0; two 16-bit loads a register.
__device__ __forceinline__ void b_frags_cols(BFrags& bf, const __nv_bfloat16* col, int64_t ld, int64_t c0, int width,
                                             bool on, int t) {
#pragma unroll
  for (int k = 0; k < kNarrowSteps; ++k) {
    bf[k][0] = bf[k][1] = 0u;
    if (on && 16 * k < width) {
      const int64_t k0 = c0 + 16 * k + 2 * t;  // rows k0, k0 + 1 (b0) and k0 + 8, k0 + 9 (b1)
      const auto two = [&](int64_t kr) {
        return static_cast<uint32_t>(__bfloat16_as_ushort(col[kr * ld])) |
               (static_cast<uint32_t>(__bfloat16_as_ushort(col[(kr + 1) * ld])) << 16);
      };
      bf[k][0] = two(k0);
      bf[k][1] = two(k0 + 8);
    }
  }
}

// acc += the staged chunk (16 × width) · B's chunk, this warp's 8 columns.
__device__ __forceinline__ void mma_chunk(float (&acc)[4], const Tile& tile, const BFrags& bf, int width, int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int k = 0; k < kNarrowSteps; ++k) {
    if (16 * k < width) {
      const int kc = 16 * k + 2 * t;
      const uint32_t f[4] = {*reinterpret_cast<const uint32_t*>(&tile[g][kc]),
                             *reinterpret_cast<const uint32_t*>(&tile[g + 8][kc]),
                             *reinterpret_cast<const uint32_t*>(&tile[g][kc + 8]),
                             *reinterpret_cast<const uint32_t*>(&tile[g + 8][kc + 8])};
      mma_bf16(acc, f, bf[k][0], bf[k][1]);
    }
  }
}

// s·acc rounded to bf16 into out's rows row0 + lane / 4 and + 8 (those below N), columns col0 + 8·warp + 2·(lane % 4)
// and the next.
__device__ __forceinline__ void store_narrow(__nv_bfloat16* out, int64_t ld, int64_t row0, int64_t N, int64_t col0,
                                             float s, const float (&acc)[4], int warp, int lane) {
  const int g = lane >> 2, t = lane & 3;
  const int64_t col = col0 + warp * 8 + 2 * t;
  if (row0 + g < N) *reinterpret_cast<uint32_t*>(out + (row0 + g) * ld + col) = pack_bf16(s * acc[0], s * acc[1]);
  if (row0 + g + 8 < N) *reinterpret_cast<uint32_t*>(out + (row0 + g + 8) * ld + col) = pack_bf16(s * acc[2], s * acc[3]);
}

// The 16 rows' totals of one float a thread and row (v[i]: this thread's part of row i), summed as block_sum
// (common.cuh) sums one row over 256 threads: each warp's butterfly, then the 8 warps' totals', so that a row comes out
// in the bits of a one-row-a-block kernel's block_sum. part: shared scratch; tot[i] written by one thread, read after
// the barrier the function ends with.
__device__ __forceinline__ void rows_block_sum(const float (&v)[kNarrowRows], float (&part)[kNarrowRows][kNarrowThreads / 32],
                                               float (&tot)[kNarrowRows]) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int i = 0; i < kNarrowRows; ++i) {
    const float w = warp_sum(v[i]);
    if (lane == 0) part[i][warp] = w;
  }
  __syncthreads();
  for (int i = warp; i < kNarrowRows; i += kNarrowThreads / 32) {
    const float t = warp_sum(lane < kNarrowThreads / 32 ? part[i][lane] : 0.f);
    if (lane == 0) tot[i] = t;
  }
  __syncthreads();
}

}  // namespace
}  // namespace cuda
}  // namespace instill
