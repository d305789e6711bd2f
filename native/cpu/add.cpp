// CPU add and bias_add (see ops/add.h).
#include "cpu/model_ops.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {

void add(const AddArgs& p) {
  const float* a = p.a->data_as<float>();
  const float* b = p.b->data_as<float>();
  float* o = p.out->data_as<float>();
  parallel_range(p.a->numel(), [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) o[i] = a[i] + b[i];
  });
}

void bias_add(const BiasAddArgs& p) {
  const int64_t n = p.y->dim(0), c = p.y->dim(1);
  float* y = p.y->data_as<float>();
  const float* b = p.bias->data_as<float>();
  parallel_range(n, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i)
      for (int64_t j = 0; j < c; ++j) y[i * c + j] += b[j];
  });
}

}  // namespace cpu
}  // namespace instill
