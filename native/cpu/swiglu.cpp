// CPU swiglu (see ops/swiglu.h); elements split over the pool.
#include <cmath>

#include "cpu/model_ops.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {

void swiglu_forward(const SwigluForwardArgs& p) {
  const float* g = p.gate->data_as<float>();
  const float* u = p.up->data_as<float>();
  float* o = p.out->data_as<float>();
  parallel_range(p.gate->numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float s = 1.0f / (1.0f + std::exp(-g[i]));
      o[i] = g[i] * s * u[i];
    }
  });
}

void swiglu_backward(const SwigluBackwardArgs& p) {
  const float* d = p.dout->data_as<float>();
  const float* g = p.gate->data_as<float>();
  const float* u = p.up->data_as<float>();
  float* dg = p.dgate->data_as<float>();
  float* du = p.dup->data_as<float>();
  parallel_range(p.gate->numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float s = 1.0f / (1.0f + std::exp(-g[i]));
      const float silu = g[i] * s;
      const float di = d[i];
      dg[i] = di * u[i] * s * (1.0f + g[i] * (1.0f - s));
      du[i] = di * silu;
    }
  });
}

}  // namespace cpu
}  // namespace instill
