#include "ops/add.h"

#include "ops/backend.h"
#include "ops/check.h"

namespace instill {

void add(const AddArgs& p) {
  const Tensor& a = need(p.a, "a");
  for (auto [t, name] : {std::pair{p.a, "a"}, {static_cast<const Tensor*>(p.b), "b"}, {static_cast<const Tensor*>(p.out), "out"}}) {
    const Tensor& tt = need(t, name);
    need_dtype(tt, name, {DType::F32});
    need_same_device(tt, name, a.device());
    if (tt.shape() != a.shape()) fail(ErrorCode::Shape, "'", name, "' must have shape ", shape_str(a.shape()), ", got ", shape_str(tt.shape()));
  }
  run_op(a.device(), &Backend::add, "add", p);
}

void bias_add(const BiasAddArgs& p) {
  const Tensor& y = need(p.y, "y");
  const Tensor& b = need(p.bias, "bias");
  need_dtype(y, "y", {DType::F32});
  need_dtype(b, "bias", {DType::F32});
  need_ndim(y, "y", 2);
  need_shape(b, "bias", {y.dim(1)}, "(OUT,) with OUT = y's columns");
  need_same_device(b, "bias", y.device());
  run_op(y.device(), &Backend::bias_add, "bias_add", p);
}

}  // namespace instill
