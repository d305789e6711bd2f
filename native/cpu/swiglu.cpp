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
    if (p.u_a) {  // s·u from the bf16 row just stored and A's rows, summed in double, rounded once (ops/swiglu.h)
      const int64_t n = p.gate->dim(0), f = p.gate->dim(1), ld = p.out_packed->dim(1);
      uint16_t* op = p.out_packed->data_as<uint16_t>();
      const uint16_t* a = static_cast<const uint16_t*>(p.u_a->data()) + p.u_row0 * f;  // (rows past its own: its buffer)
      const double s = p.u_scale;
      parallel_range(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          uint16_t* row = op + i * ld;
          for (int64_t j = 0; j < p.u_rows; ++j) {
            double acc = 0;
            for (int64_t k = 0; k < f; ++k) acc += static_cast<double>(bf16_to_f32(row[k])) * bf16_to_f32(a[j * f + k]);
            row[f + j] = f32_to_bf16(static_cast<float>(s * acc));
          }
        }
      });
    }
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
    if (p.g_b) {  // s·g from the bf16 halves just stored and B's diagonal blocks, summed in double, rounded once
      const int64_t n = p.gate->dim(0), f = p.gate->dim(1), ld = p.dgu->dim(1), ldb = p.g_b->dim(1), r = p.g_rank;
      uint16_t* pd = p.dgu->data_as<uint16_t>();
      const uint16_t* bm = p.g_b->data_as<uint16_t>() + p.g_col0;
      const double s = p.g_scale;
      parallel_range(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          uint16_t* row = pd + i * ld;
          for (int64_t h = 0; h < 2; ++h)  // gate's block, then up's
            for (int64_t q = 0; q < r; ++q) {
              double acc = 0;
              for (int64_t j = 0; j < f; ++j)
                acc += static_cast<double>(bf16_to_f32(row[h * f + j])) * bf16_to_f32(bm[(h * f + j) * ldb + h * r + q]);
              row[2 * f + h * r + q] = f32_to_bf16(static_cast<float>(s * acc));
            }
        }
      });
    }
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
