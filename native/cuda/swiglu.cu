// swiglu on CUDA (ops/swiglu.h): elementwise, f32, σ(g) = 1 / (1 + exp(−g)) with
// the accurate expf (no fast-math), so it matches the CPU to f32 rounding.
#include "cuda/common.cuh"
#include "ops/swiglu.h"

namespace instill {
namespace cuda {

namespace {
__global__ void swiglu_forward_kernel(const float* gate, const float* up, float* out, int64_t n) {  // (N·F) each
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    const float sig = 1.f / (1.f + expf(-g));
    out[i] = g * sig * up[i];
  }
}

__global__ void swiglu_backward_kernel(const float* dout, const float* gate, const float* up, float* dgate, float* dup,
                                       int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i], u = up[i], d = dout[i];
    const float sig = 1.f / (1.f + expf(-g));
    const float silu = g * sig;
    dgate[i] = d * u * sig * (1.f + g * (1.f - sig));
    dup[i] = d * silu;
  }
}
}  // namespace

void swiglu_forward(const SwigluForwardArgs& p) {
  const int64_t n = p.gate->numel();
  if (n == 0) return;
  swiglu_forward_kernel<<<grid_1d(n, 256), 256, 0, stream()>>>(p.gate->data_as<float>(), p.up->data_as<float>(),
                                                                p.out->data_as<float>(), n);
  check_launch("swiglu_forward_kernel");
}

void swiglu_backward(const SwigluBackwardArgs& p) {
  const int64_t n = p.gate->numel();
  if (n == 0) return;
  swiglu_backward_kernel<<<grid_1d(n, 256), 256, 0, stream()>>>(p.dout->data_as<float>(), p.gate->data_as<float>(),
                                                                 p.up->data_as<float>(), p.dgate->data_as<float>(),
                                                                 p.dup->data_as<float>(), n);
  check_launch("swiglu_backward_kernel");
}

}  // namespace cuda
}  // namespace instill
