// CPU matmul: one GEMM term.
#include "cpu/gemm.h"
#include "cpu/ops.h"

namespace instill {
namespace cpu {

void matmul(const MatmulArgs& p) {
  const Tensor &a = *p.a, &b = *p.b;
  Tensor& c = *p.c;
  const int64_t m = c.dim(0), n = c.dim(1);
  const int64_t k = p.trans_a ? a.dim(0) : a.dim(1);
  gemm(m, n, k, 1.0f, GemmOperand{a.data(), a.dtype(), a.dim(1), p.trans_a},
       GemmOperand{b.data(), b.dtype(), b.dim(1), p.trans_b}, 0.0f, c.data_as<float>(), n);
}

}  // namespace cpu
}  // namespace instill
