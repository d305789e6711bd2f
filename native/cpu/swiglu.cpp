// CPU swiglu (see ops/swiglu.h): each ISA's vector code (row_kernels.inc) over
// ranges of elements split over the pool.
#include "cpu/model_ops.h"
#include "cpu/row_kernels.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {

void swiglu_forward(const SwigluForwardArgs& p) {
  const float* g = p.gate->data_as<float>();
  const float* u = p.up->data_as<float>();
  float* o = p.out->data_as<float>();
  const RowKernels& k = row_kernels_for_active_isa();
  parallel_range(p.gate->numel(), [&](int64_t b, int64_t e) { k.swiglu(g + b, u + b, o + b, e - b); });
}

void swiglu_backward(const SwigluBackwardArgs& p) {
  const float* d = p.dout->data_as<float>();
  const float* g = p.gate->data_as<float>();
  const float* u = p.up->data_as<float>();
  float* dg = p.dgate->data_as<float>();
  float* du = p.dup->data_as<float>();
  const RowKernels& k = row_kernels_for_active_isa();
  parallel_range(p.gate->numel(), [&](int64_t b, int64_t e) { k.swiglu_backward(d + b, g + b, u + b, dg + b, du + b, e - b); });
}

}  // namespace cpu
}  // namespace instill
