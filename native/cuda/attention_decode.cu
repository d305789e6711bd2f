// attention_decode on CUDA (ops/attention.h): incremental decoding against a KV
// cache, one sequence. The n new k/v rows are copied into the cache at rows
// [start, start+n) (one contiguous device-to-device copy each), then new token i
// (absolute position start+i) attends to cache rows [first, start+i], first =
// max(0, start+i−W+1) with a sliding window W, else 0.
//
// One warp per (token, query head): lane l owns dims l, l+32, … (D <= 256);
// each key's score is a warp-wide dot product (xor-shuffle sum, every lane gets
// it) and the online softmax (running max m, sum l, accumulator rescaled by
// exp(m_old − m_new)) is the same arithmetic as the CPU's attend_row, in f32.
// Decoding is bound by reading the cache once per head; this keeps it simple.
#include <cmath>

#include "cuda/common.cuh"
#include "ops/attention.h"

namespace instill {
namespace cuda {

namespace {

constexpr int kMaxPerLane = 8;  // D <= 256
constexpr int kWarpsPerBlock = 4;

__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    attention_decode_kernel(const float* q, const float* kc, const float* vc, float* out, int64_t n, int64_t H,
                            int64_t KVH, int64_t D, int64_t start, int64_t window, float scale) {
  pdl_enter();
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (warp >= n * H) return;  // whole warps leave together (blockDim is a multiple of 32)
  const int64_t i = warp / H, h = warp % H, g = h / (H / KVH);
  const int64_t pos = start + i;
  const int64_t first = window > 0 ? (pos - window + 1 > 0 ? pos - window + 1 : 0) : 0;
  float qr[kMaxPerLane], acc[kMaxPerLane];
#pragma unroll
  for (int t = 0; t < kMaxPerLane; ++t) {
    const int64_t d = lane + 32 * t;
    qr[t] = d < D ? q[(i * H + h) * D + d] : 0.f;
    acc[t] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int64_t j = first; j <= pos; ++j) {
    const float* kr = kc + (j * KVH + g) * D;
    const float* vr = vc + (j * KVH + g) * D;
    float s = 0.f;
#pragma unroll
    for (int t = 0; t < kMaxPerLane; ++t) {
      const int64_t d = lane + 32 * t;
      if (d < D) s += qr[t] * kr[d];
    }
    s = warp_sum(s) * scale;
    const float mnew = fmaxf(m, s);
    const float corr = __expf(m - mnew);  // 0 for the first key (m = -inf)
    const float p = __expf(s - mnew);
    l = l * corr + p;
#pragma unroll
    for (int t = 0; t < kMaxPerLane; ++t) {
      const int64_t d = lane + 32 * t;
      if (d < D) acc[t] = acc[t] * corr + p * vr[d];
    }
    m = mnew;
  }
  const float inv = 1.f / l;  // l >= 1: the token always sees itself
#pragma unroll
  for (int t = 0; t < kMaxPerLane; ++t) {
    const int64_t d = lane + 32 * t;
    if (d < D) out[(i * H + h) * D + d] = acc[t] * inv;
  }
}

}  // namespace

void attention_decode(const AttentionDecodeArgs& p) {
  const int64_t n = p.q->dim(0), H = p.q->dim(1), D = p.q->dim(2), KVH = p.k->dim(1);
  if (D > 32 * kMaxPerLane) fail(ErrorCode::Unsupported, "attention decode on CUDA takes head dim <= ", 32 * kMaxPerLane, ", got ", D);
  if (n == 0) return;
  const size_t rows_bytes = static_cast<size_t>(n * KVH * D) * sizeof(float);
  const size_t offset = static_cast<size_t>(p.start * KVH * D);
  INSTILL_CUDA_CHECK(cudaMemcpyAsync(p.k_cache->data_as<float>() + offset, p.k->data(), rows_bytes,
                                     cudaMemcpyDeviceToDevice, stream()));
  INSTILL_CUDA_CHECK(cudaMemcpyAsync(p.v_cache->data_as<float>() + offset, p.v->data(), rows_bytes,
                                     cudaMemcpyDeviceToDevice, stream()));
  pdl_barrier();
  const int64_t warps = n * H;
  const unsigned blocks = static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
  launch("attention_decode_kernel", attention_decode_kernel, blocks, kWarpsPerBlock * 32, 0, stream(),
         p.q->data_as<float>(), p.k_cache->data_as<float>(), p.v_cache->data_as<float>(), p.out->data_as<float>(), n, H,
         KVH, D, p.start, p.window, p.scale);
}

}  // namespace cuda
}  // namespace instill
