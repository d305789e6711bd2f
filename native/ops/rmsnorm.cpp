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
  if (p.u_a) {
    if (!p.y_packed) fail(ErrorCode::Arg, "rmsnorm_forward: 'u_a' needs 'y_packed' (s·u goes into its columns past C)");
    need_dtype(*p.u_a, "u_a", {DType::BF16});
    need_ndim(*p.u_a, "u_a", 2);
    need_same_device(*p.u_a, "u_a", x.device());
    if (p.u_a->dim(1) < c) fail(ErrorCode::Shape, "rmsnorm_forward: 'u_a' has ", p.u_a->dim(1), " columns, fewer than C = ", c);
    if (p.u_rows <= 0 || p.u_row0 < 0 || p.u_row0 > p.u_a->dim(0) - p.u_rows)
      fail(ErrorCode::Shape, "rmsnorm_forward: rows ", p.u_row0, "..", p.u_row0 + p.u_rows, " of 'u_a' (", p.u_a->dim(0), " rows)");
    if (c + p.u_rows > y.dim(1))
      fail(ErrorCode::Shape, "rmsnorm_forward: 'y_packed' has ", y.dim(1), " columns, fewer than C + u_rows = ", c + p.u_rows);
    if (!std::isfinite(p.u_scale)) fail(ErrorCode::Arg, "rmsnorm_forward: 'u_scale' must be finite, got ", p.u_scale);
  }
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
  if (p.g_b) {
    if (!p.dx_packed) fail(ErrorCode::Arg, "rmsnorm_backward: 'g_b' needs 'dx_packed' (s·g goes into its columns past C)");
    need_dtype(*p.g_b, "g_b", {DType::BF16});
    need_ndim(*p.g_b, "g_b", 2);
    need_same_device(*p.g_b, "g_b", x.device());
    if (p.g_b->dim(0) < c) fail(ErrorCode::Shape, "rmsnorm_backward: 'g_b' has ", p.g_b->dim(0), " rows, fewer than C = ", c);
    if (p.g_rows <= 0 || p.g_col0 < 0 || p.g_col0 > p.g_b->dim(1) - p.g_rows)
      fail(ErrorCode::Shape, "rmsnorm_backward: columns ", p.g_col0, "..", p.g_col0 + p.g_rows, " of 'g_b' (", p.g_b->dim(1), " columns)");
    if (c + p.g_rows > p.dx_packed->dim(1))
      fail(ErrorCode::Shape, "rmsnorm_backward: 'dx_packed' has ", p.dx_packed->dim(1), " columns, fewer than C + g_rows = ", c + p.g_rows);
    if (!std::isfinite(p.g_scale)) fail(ErrorCode::Arg, "rmsnorm_backward: 'g_scale' must be finite, got ", p.g_scale);
  }
  run_op(x.device(), &Backend::rmsnorm_backward, "rmsnorm_backward", p);
}

}  // namespace instill
