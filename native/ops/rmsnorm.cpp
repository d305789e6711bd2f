#include "ops/rmsnorm.h"

#include <cmath>

#include "ops/backend.h"
#include "ops/check.h"

namespace instill {

void rmsnorm_forward(const RmsnormForwardArgs& p) {
  const Tensor& x = need(p.x, "x");
  const Tensor& w = need(p.w, "w");
  if (p.y_packed && p.y) fail(ErrorCode::Arg, "rmsnorm_forward: 'y_packed' replaces 'y' (give y null)");
  const Tensor& y = p.y_packed ? *p.y_packed : need(p.y, "y");
  const Tensor& rstd = need(p.rstd, "rstd");
  for (auto [t, name] : {std::pair{&x, "x"}, {&w, "w"}, {&y, "y"}, {&rstd, "rstd"}}) {
    need_dtype(*t, name, {DType::F32, DType::BF16});
    if (t != &y) need_dtype(*t, name, {DType::F32});  // y alone may be bf16
    need_same_device(*t, name, x.device());
  }
  need_ndim(x, "x", 2);
  const int64_t n = x.dim(0), c = x.dim(1);
  need_shape(w, "w", {c}, "(C,)");
  if (p.y_packed) {
    need_packed(y, "y_packed", n, "N", c, "C", false, x.device());
  } else {
    need_shape(y, "y", {n, c}, "(N, C)");
  }
  need_shape(rstd, "rstd", {n}, "(N,)");
  if (!(p.eps > 0) || !std::isfinite(p.eps)) fail(ErrorCode::Arg, "'eps' must be a positive finite number, got ", p.eps);
  run_op(x.device(), &Backend::rmsnorm_forward, "rmsnorm_forward", p);
}

void rmsnorm_backward(const RmsnormBackwardArgs& p) {
  const Tensor& dy = need(p.dy, "dy");
  const Tensor& x = need(p.x, "x");
  const Tensor& w = need(p.w, "w");
  const Tensor& rstd = need(p.rstd, "rstd");
  const Tensor& dx = need(p.dx, "dx");
  for (auto [t, name] : {std::pair{&dy, "dy"}, {&x, "x"}, {&w, "w"}, {&rstd, "rstd"}, {&dx, "dx"}}) {
    need_dtype(*t, name, {DType::F32});
    need_same_device(*t, name, x.device());
  }
  need_ndim(x, "x", 2);
  const int64_t n = x.dim(0), c = x.dim(1);
  need_shape(dy, "dy", {n, c}, "(N, C)");
  need_shape(w, "w", {c}, "(C,)");
  need_shape(rstd, "rstd", {n}, "(N,)");
  need_shape(dx, "dx", {n, c}, "(N, C)");
  if (p.dw) {
    need_dtype(*p.dw, "dw", {DType::F32});
    need_shape(*p.dw, "dw", {c}, "(C,)");
    need_same_device(*p.dw, "dw", x.device());
  }
  if (p.dx_packed) need_packed(*p.dx_packed, "dx_packed", n, "N", c, "C", false, x.device());
  run_op(x.device(), &Backend::rmsnorm_backward, "rmsnorm_backward", p);
}

}  // namespace instill
