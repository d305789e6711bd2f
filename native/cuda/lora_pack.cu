// pack_lowrank_bf16 (gemm.h): lora_linear's activation pack fused with its
// low-rank product, one pass over the activation instead of three.
//
// lora_linear's bf16 path packs an f32 activation to bf16 for the big product
// and multiplies it by a rank-R factor: forward u = x·Aᵀ, backward g = dy·B.
// Done apart (a pack, a cuBLASLt product of N = R columns, a pack of s·u) the
// narrow product read the whole packed activation again and cost as much as the
// pack (the op profile of a Llama-3.2-1B step: 1.4 ms of packs, 1.8 ms for u and
// its pack, per forward). Here each warp reads ROWS rows once, writes their bf16
// copy, and keeps the ROWS × R dot products in registers:
//   dst[n, c]     = bf16(src[n, c])                      c < K
//   out[n, r]     = Σ_c bf16(src[n, c]) · bf16(F[r, c])   (f32 accumulation)
//   dst[n, K + r] = bf16(scale · out[n, r])                r < R
// The operands are rounded as the GEMM rounds them, so the result is the
// unfused path's within f32 summation order. F is first copied to bf16 (R, K)
// rows (B is stored (K, R) and is transposed there), a few hundred KB that every
// warp reads through L1.
#include <algorithm>

#include "cuda/gemm.h"

namespace instill {
namespace cuda {

namespace {

constexpr int kWarps = 4;  // warps per block

// f (R, K) bf16 = F, from F stored (R, K) (trans false) or (K, R) (trans true).
__global__ void factor_rows_kernel(const float* __restrict__ src, bool trans, int64_t R, int64_t K,
                                   __nv_bfloat16* __restrict__ f) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < R * K;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / K, c = i - r * K;
    f[i] = __float2bfloat16(trans ? src[c * R + r] : src[i]);
  }
}

__device__ __forceinline__ float4 load4_bf16(const __nv_bfloat16* p) {
  const uint2 raw = __ldg(reinterpret_cast<const uint2*>(p));
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

// RP: R rounded up to the instantiated width (rows r >= R of the factor are 0).
// K % 4 == 0; src rows, dst rows and f rows are 16/8/8-byte aligned (checked on the host).
template <int RP, int ROWS>
__global__ void __launch_bounds__(32 * kWarps)
    pack_lowrank_kernel(const float* __restrict__ src, int64_t N, int64_t K, const __nv_bfloat16* __restrict__ f,
                        int R, float scale, __nv_bfloat16* __restrict__ dst, int64_t ldd, float* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5)) * ROWS;
  if (row0 >= N) return;
  float acc[ROWS][RP];
#pragma unroll
  for (int i = 0; i < ROWS; ++i)
#pragma unroll
    for (int r = 0; r < RP; ++r) acc[i][r] = 0.f;
  // U column groups of 128 per iteration: their loads are issued together (memory-level parallelism:
  // a few warps per SM at N = 2048 rows must keep enough bytes in flight).
  constexpr int U = ROWS >= 4 ? 2 : 4;
  for (int64_t c0 = 4 * static_cast<int64_t>(lane); c0 < K; c0 += 128 * U) {
    float4 v[U][ROWS];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int i = 0; i < ROWS; ++i) {
        const int64_t n = row0 + i, c = c0 + 128 * u;
        v[u][i] = n < N && c < K ? __ldcs(reinterpret_cast<const float4*>(src + n * K + c))  // read once: stream it
                                 : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = c0 + 128 * u;
      if (c >= K) break;
      float4 x[ROWS];
#pragma unroll
      for (int i = 0; i < ROWS; ++i) {
        const __nv_bfloat162 lo = __floats2bfloat162_rn(v[u][i].x, v[u][i].y);
        const __nv_bfloat162 hi = __floats2bfloat162_rn(v[u][i].z, v[u][i].w);
        if (row0 + i < N) {
          uint2 raw;
          raw.x = *reinterpret_cast<const uint32_t*>(&lo);
          raw.y = *reinterpret_cast<const uint32_t*>(&hi);
          *reinterpret_cast<uint2*>(dst + (row0 + i) * ldd + c) = raw;
        }
        const float2 a = __bfloat1622float2(lo), b = __bfloat1622float2(hi);
        x[i] = make_float4(a.x, a.y, b.x, b.y);
      }
#pragma unroll
      for (int r = 0; r < RP; ++r) {
        if (r >= R) break;
        const float4 w = load4_bf16(f + r * K + c);
#pragma unroll
        for (int i = 0; i < ROWS; ++i)
          acc[i][r] += x[i].x * w.x + x[i].y * w.y + x[i].z * w.z + x[i].w * w.w;
      }
    }
  }
#pragma unroll
  for (int i = 0; i < ROWS; ++i) {
    const int64_t n = row0 + i;
#pragma unroll
    for (int r = 0; r < RP; ++r) {
      if (r >= R) break;
      const float t = warp_sum(acc[i][r]);
      if (lane == (r & 31) && n < N) {
        out[n * R + r] = t;
        dst[n * ldd + K + r] = __float2bfloat16(scale * t);
      }
    }
  }
}

template <int RP, int ROWS>
void launch(const float* src, int64_t N, int64_t K, const __nv_bfloat16* f, int R, float scale, __nv_bfloat16* dst,
            int64_t ldd, float* out) {
  const int64_t blocks = (N + kWarps * ROWS - 1) / (kWarps * ROWS);
  pack_lowrank_kernel<RP, ROWS><<<static_cast<unsigned>(blocks), 32 * kWarps, 0, stream()>>>(src, N, K, f, R, scale,
                                                                                           dst, ldd, out);
  check_launch("pack_lowrank_kernel");
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

bool pack_lowrank_supported(const float* src, int64_t K, int64_t R, const __nv_bfloat16* dst, int64_t ldd) {
  return R >= 1 && R <= 64 && K >= 4 && K % 4 == 0 && aligned(src, 16) && aligned(dst, 8) && ldd % 4 == 0;
}

void pack_lowrank_bf16(const float* src, int64_t N, int64_t K, const float* factor, bool factor_trans, int64_t R,
                       float scale, __nv_bfloat16* dst, int64_t ldd, float* out) {
  if (N <= 0) return;
  Tensor f = Tensor::empty({R, K}, DType::BF16, Device::CUDA);
  factor_rows_kernel<<<grid_1d(R * K, 256), 256, 0, stream()>>>(factor, factor_trans, R, K,
                                                                 f.data_as<__nv_bfloat16>());
  check_launch("factor_rows_kernel");
  const __nv_bfloat16* fp = f.data_as<__nv_bfloat16>();
  const int r = static_cast<int>(R);
  if (R <= 8) launch<8, 4>(src, N, K, fp, r, scale, dst, ldd, out);
  else if (R <= 16) launch<16, 2>(src, N, K, fp, r, scale, dst, ldd, out);
  else if (R <= 32) launch<32, 1>(src, N, K, fp, r, scale, dst, ldd, out);
  else launch<64, 1>(src, N, K, fp, r, scale, dst, ldd, out);
}

}  // namespace cuda
}  // namespace instill
