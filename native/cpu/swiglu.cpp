// CPU swiglu (see ops/swiglu.h): each ISA's vector code (row_kernels.inc) over
// ranges of elements split over the pool. bf16 tensors: the same in f32 (cpu/activations.h).
#include "cpu/activations.h"
#include "cpu/model_ops.h"
#include "cpu/row_kernels.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {

void swiglu_forward(const SwigluForwardArgs& p) {
  const Tensor gt = f32_of(*p.gate), ut = f32_of(*p.up);
  Tensor ot = f32_out(*p.out, false);
  const float* g = gt.data_as<float>();
  const float* u = ut.data_as<float>();
  float* o = ot.data_as<float>();
  const RowKernels& k = row_kernels_for_active_isa();
  parallel_range(p.gate->numel(), [&](int64_t b, int64_t e) { k.swiglu(g + b, u + b, o + b, e - b); });
  store_f32(ot, *p.out);
}

void swiglu_backward(const SwigluBackwardArgs& p) {
  const Tensor dt = f32_of(*p.dout), gt = f32_of(*p.gate), ut = f32_of(*p.up);
  Tensor dgt = f32_out(*p.dgate, false), dut = f32_out(*p.dup, false);
  const float* d = dt.data_as<float>();
  const float* g = gt.data_as<float>();
  const float* u = ut.data_as<float>();
  float* dg = dgt.data_as<float>();
  float* du = dut.data_as<float>();
  const RowKernels& k = row_kernels_for_active_isa();
  parallel_range(p.gate->numel(), [&](int64_t b, int64_t e) { k.swiglu_backward(d + b, g + b, u + b, dg + b, du + b, e - b); });
  store_f32(dgt, *p.dgate);
  store_f32(dut, *p.dup);
}

}  // namespace cpu
}  // namespace instill
