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
    const Tensor& op = *p.out_packed;
    need_dtype(op, "out_packed", {DType::BF16});
    need_ndim(op, "out_packed", 2);
    if (op.dim(0) != g.dim(0) || op.dim(1) < g.dim(1)) {
      fail(ErrorCode::Shape, "'out_packed' must be (N, ld) with ld >= F: (", g.dim(0), ", >= ", g.dim(1), "), got ",
           shape_str(op.shape()));
    }
    need_same_device(op, "out_packed", g.device());
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
    const Tensor& dgu = *p.dgu;
    need_dtype(dgu, "dgu", {DType::BF16});
    need_ndim(dgu, "dgu", 2);
    if (dgu.dim(0) != g.dim(0) || dgu.dim(1) < 2 * g.dim(1)) {
      fail(ErrorCode::Shape, "'dgu' must be (N, ld) with ld >= 2F: (", g.dim(0), ", >= ", 2 * g.dim(1), "), got ",
           shape_str(dgu.shape()));
    }
    need_same_device(dgu, "dgu", g.device());
  } else {
    need_like(p.dgate, "dgate", g);
    need_like(p.dup, "dup", g);
  }
  run_op(g.device(), &Backend::swiglu_backward, "swiglu_backward", p);
}

}  // namespace instill
