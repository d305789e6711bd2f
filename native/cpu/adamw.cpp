// CPU AdamW (see ops/adamw.h): per element in double, stored f32.
#include <cmath>

#include "cpu/model_ops.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {

void adamw_step(const AdamwArgs& p) {
  float* w = p.param->data_as<float>();
  const float* g = p.grad->data_as<float>();
  float* m = p.m->data_as<float>();
  float* v = p.v->data_as<float>();
  const double bc1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(p.beta2, static_cast<double>(p.step));
  const double step_size = p.lr / bc1, sqrt_bc2 = std::sqrt(bc2), decay = 1.0 - p.lr * p.weight_decay;
  const double b1 = p.beta1, b2 = p.beta2, eps = p.eps;
  parallel_range(p.param->numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const double gi = g[i];
      const double mi = b1 * m[i] + (1.0 - b1) * gi;
      const double vi = b2 * v[i] + (1.0 - b2) * gi * gi;
      m[i] = static_cast<float>(mi);
      v[i] = static_cast<float>(vi);
      const double denom = std::sqrt(vi) / sqrt_bc2 + eps;
      w[i] = static_cast<float>(static_cast<double>(w[i]) * decay - step_size * mi / denom);
    }
  });
}

}  // namespace cpu
}  // namespace instill
