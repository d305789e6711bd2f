// matmul: C (M, N) = op(A) · op(B), the plain product behind every layer.
//   a: (M, K), or (K, M) when trans_a     f32 | bf16 | f16
//   b: (K, N), or (N, K) when trans_b     f32 | bf16 | f16
//   c: (M, N) f32, written (=)
#pragma once

#include "runtime/tensor.h"

namespace instill {

struct MatmulArgs {
  const Tensor* a;
  const Tensor* b;
  bool trans_a;
  bool trans_b;
  Tensor* c;
};

// Shape of the result; throws E_SHAPE / E_DTYPE with what to fix.
Shape matmul_output_shape(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b);
void matmul(const MatmulArgs& args);

}  // namespace instill
