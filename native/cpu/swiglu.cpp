// CPU swiglu (see ops/swiglu.h): each ISA's vector code (row_kernels.inc) over
// ranges of elements split over the pool. bf16 tensors: the same in f32 (cpu/activations.h).
#include "cpu/activations.h"
#include "cpu/model_ops.h"
#include "cpu/row_kernels.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {

void swiglu_forward(const SwigluForwardArgs& p) {
  if (p.out_packed) {  // into an f32 (N, F), then each row rounded into out_packed's first F columns
    Tensor o32 = Tensor::empty(p.gate->shape(), DType::F32);
    SwigluForwardArgs q = p;
    q.out = &o32;
    q.out_packed = nullptr;
    cpu::swiglu_forward(q);
    store_f32_columns(o32, *p.out_packed, 0);
    return;
  }
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
  if (p.dgu) {  // into f32 (N, F) pairs, then each row's halves rounded into dgu's columns
    Tensor dg32 = Tensor::empty(p.gate->shape(), DType::F32), du32 = Tensor::empty(p.gate->shape(), DType::F32);
    SwigluBackwardArgs q = p;
    q.dgate = &dg32;
    q.dup = &du32;
    q.dgu = nullptr;
    cpu::swiglu_backward(q);
    store_f32_columns(dg32, *p.dgu, 0);
    store_f32_columns(du32, *p.dgu, p.gate->dim(1));
    return;
  }
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
