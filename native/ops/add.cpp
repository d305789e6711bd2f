#include "ops/add.h"

#include "ops/backend.h"
#include "runtime/op_profile.h"
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
  const Backend& be = backend_for(a.device());
  if (!be.add) fail(ErrorCode::Unsupported, "add is not implemented on ", be.name);
  const OpScope scope("add", be.device);
  be.add(p);
}

void bias_add(const BiasAddArgs& p) {
  const Tensor& y = need(p.y, "y");
  const Tensor& b = need(p.bias, "bias");
  need_dtype(y, "y", {DType::F32});
  need_dtype(b, "bias", {DType::F32});
  need_ndim(y, "y", 2);
  need_shape(b, "bias", {y.dim(1)}, "(OUT,) with OUT = y's columns");
  need_same_device(b, "bias", y.device());
  const Backend& be = backend_for(y.device());
  if (!be.bias_add) fail(ErrorCode::Unsupported, "bias_add is not implemented on ", be.name);
  const OpScope scope("bias_add", be.device);
  be.bias_add(p);
}

}  // namespace instill
