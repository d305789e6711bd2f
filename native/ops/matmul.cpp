#include "ops/matmul.h"

#include "ops/backend.h"
#include "ops/check.h"

namespace instill {

Shape matmul_output_shape(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  need_ndim(a, "a", 2);
  need_ndim(b, "b", 2);
  need_dtype(a, "a", {DType::F32, DType::BF16, DType::F16});
  need_dtype(b, "b", {DType::F32, DType::BF16, DType::F16});
  const int64_t m = trans_a ? a.dim(1) : a.dim(0), ka = trans_a ? a.dim(0) : a.dim(1);
  const int64_t kb = trans_b ? b.dim(1) : b.dim(0), n = trans_b ? b.dim(0) : b.dim(1);
  if (ka != kb) {
    fail(ErrorCode::Shape, "matmul: inner dimensions differ: op(a) is (", m, ", ", ka, ") and op(b) is (", kb, ", ",
         n, ")", trans_a || trans_b ? " after the requested transposes" : "");
  }
  return {m, n};
}

void matmul(const MatmulArgs& args) {
  const Tensor& a = need(args.a, "a");
  const Tensor& b = need(args.b, "b");
  Tensor& c = const_cast<Tensor&>(need(args.c, "out"));
  Shape out = matmul_output_shape(a, b, args.trans_a, args.trans_b);
  need_dtype(c, "out", {DType::F32});
  need_shape(c, "out", {out[0], out[1]}, "(rows of op(a), columns of op(b))");
  need_same_device(b, "b", a.device());
  need_same_device(c, "out", a.device());
  run_op(a.device(), &Backend::matmul, "matmul", args);
}

}  // namespace instill
