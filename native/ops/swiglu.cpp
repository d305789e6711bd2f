#include "ops/swiglu.h"

#include "ops/backend.h"
#include "ops/check.h"

namespace instill {

namespace {
// Every tensor of a call has gate's dtype: all f32, or all bf16.
void need_like(const Tensor* t, const char* name, const Tensor& ref) {
  const Tensor& tt = need(t, name);
  if (tt.dtype() != ref.dtype()) {
    fail(ErrorCode::DType, "'", name, "' must be ", dtype_name(ref.dtype()), " like gate, got ", dtype_name(tt.dtype()));
  }
  need_same_device(tt, name, ref.device());
  if (tt.shape() != ref.shape()) {
    fail(ErrorCode::Shape, "'", name, "' must have shape ", shape_str(ref.shape()), " like gate, got ", shape_str(tt.shape()));
  }
}
}  // namespace

void swiglu_forward(const SwigluForwardArgs& p) {
  const Tensor& g = need(p.gate, "gate");
  need_dtype(g, "gate", {DType::F32, DType::BF16});
  need_like(p.up, "up", g);
  if (p.out_packed) {
    if (p.out) fail(ErrorCode::Arg, "swiglu_forward: 'out_packed' replaces 'out' (give out null)");
    need_ndim(g, "gate", 2);
    need_packed(*p.out_packed, "out_packed", g.dim(0), "N", g.dim(1), "F", false, g.device());
  } else {
    need_like(p.out, "out", g);
  }
  run_op(g.device(), &Backend::swiglu_forward, "swiglu_forward", p);
}

void swiglu_backward(const SwigluBackwardArgs& p) {
  const Tensor& g = need(p.gate, "gate");
  need_dtype(g, "gate", {DType::F32, DType::BF16});
  need_like(p.up, "up", g);
  need_like(p.dout, "dout", g);
  if (p.dgu) {
    if (p.dgate || p.dup) fail(ErrorCode::Arg, "swiglu_backward: 'dgu' replaces 'dgate' and 'dup' (give those null)");
    need_ndim(g, "gate", 2);
    need_packed(*p.dgu, "dgu", g.dim(0), "N", 2 * g.dim(1), "2F", false, g.device());
  } else {
    need_like(p.dgate, "dgate", g);
    need_like(p.dup, "dup", g);
  }
  run_op(g.device(), &Backend::swiglu_backward, "swiglu_backward", p);
}

}  // namespace instill
