// adamw on CUDA (ops/adamw.h): one thread per element, the update in double as
// the CPU does it (torch.optim.AdamW semantics), stored f32.
#include <cmath>

#include "cuda/common.cuh"
#include "ops/adamw.h"

namespace instill {
namespace cuda {

namespace {
__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n, double lr, double beta1,
                             double beta2, double eps, double weight_decay, double bc1, double sqrt_bc2) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double p = param[i], g = grad[i];
    p *= 1.0 - lr * weight_decay;
    const double mi = beta1 * m[i] + (1.0 - beta1) * g;
    const double vi = beta2 * v[i] + (1.0 - beta2) * g * g;
    p -= (lr / bc1) * mi / (sqrt(vi) / sqrt_bc2 + eps);
    m[i] = static_cast<float>(mi);
    v[i] = static_cast<float>(vi);
    param[i] = static_cast<float>(p);
  }
}
}  // namespace

void adamw_step(const AdamwArgs& a) {
  const int64_t n = a.param->numel();
  if (n == 0) return;
  const double t = static_cast<double>(a.step);
  const double bc1 = 1.0 - std::pow(a.beta1, t), bc2 = 1.0 - std::pow(a.beta2, t);
  adamw_kernel<<<grid_1d(n, 256), 256, 0, stream()>>>(a.param->data_as<float>(), a.grad->data_as<float>(),
                                                       a.m->data_as<float>(), a.v->data_as<float>(), n, a.lr, a.beta1,
                                                       a.beta2, a.eps, a.weight_decay, bc1, std::sqrt(bc2));
  check_launch("adamw_kernel");
}

}  // namespace cuda
}  // namespace instill
