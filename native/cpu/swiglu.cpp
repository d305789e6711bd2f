// CPU swiglu (see ops/swiglu.h): each ISA's vector code (row_kernels.inc) over
// ranges of elements split over the pool. bf16 tensors: the same in f32 (cpu/activations.h).
#include "cpu/activations.h"
#include "cpu/model_ops.h"
#include "cpu/row_kernels.h"
#include "runtime/dtype.h"
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
    const int64_t n = p.gate->dim(0), f = p.gate->dim(1), ld = p.out_packed->dim(1);
    uint16_t* out = p.out_packed->data_as<uint16_t>();
    parallel_range(n, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r)
        for (int64_t c = 0; c < f; ++c) out[r * ld + c] = f32_to_bf16(o32.data_as<float>()[r * f + c]);
    });
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
    const int64_t n = p.gate->dim(0), f = p.gate->dim(1), ld = p.dgu->dim(1);
    uint16_t* out = p.dgu->data_as<uint16_t>();
    parallel_range(n, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r)
        for (int64_t c = 0; c < f; ++c) {
          out[r * ld + c] = f32_to_bf16(dg32.data_as<float>()[r * f + c]);
          out[r * ld + f + c] = f32_to_bf16(du32.data_as<float>()[r * f + c]);
        }
    });
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
