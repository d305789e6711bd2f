// rope on CUDA (ops/rope.h): one thread per (token, head, i < D/2) pair; θ is the
// f32 product p·inv_freq[i] as on the CPU, cos/sin with the accurate sincosf
// (no fast-math), backward = the same rotation with sin negated. In place is
// safe: each pair (i, i+D/2) is read and written by one thread.
#include "cuda/common.cuh"
#include "ops/rope.h"

namespace instill {
namespace cuda {

namespace {
__global__ void rope_kernel(const float* x, const int32_t* pos, const float* inv_freq, int64_t N, int64_t H,
                            int64_t half, float sign, float* out) {  // x, out (N, H, 2·half); pos (N); inv_freq (half)
  const int64_t total = N * H * half;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = k % half, nh = k / half, n = nh / H;
    const float th = static_cast<float>(pos[n]) * inv_freq[i];
    float s, c;
    sincosf(th, &s, &c);
    s *= sign;
    const float* xr = x + nh * 2 * half;
    float* o = out + nh * 2 * half;
    const float x1 = xr[i], x2 = xr[i + half];
    o[i] = x1 * c - x2 * s;
    o[i + half] = x2 * c + x1 * s;
  }
}

void rope(const RopeArgs& p, float sign) {
  const int64_t N = p.x->dim(0), H = p.x->dim(1), half = p.x->dim(2) / 2;
  const int64_t total = N * H * half;
  if (total == 0) return;
  rope_kernel<<<grid_1d(total, 256), 256, 0, stream()>>>(p.x->data_as<float>(), p.positions->data_as<int32_t>(),
                                                          p.inv_freq->data_as<float>(), N, H, half, sign,
                                                          p.out->data_as<float>());
  check_launch("rope_kernel");
}
}  // namespace

void rope_forward(const RopeArgs& p) { rope(p, 1.f); }
void rope_backward(const RopeArgs& p) { rope(p, -1.f); }

}  // namespace cuda
}  // namespace instill
