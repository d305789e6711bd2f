#include "ops/lora_linear.h"

#include <cmath>

#include "ops/backend.h"
#include "ops/check.h"

namespace instill {

namespace {

void need_finite_scale(float scale) {
  if (!std::isfinite(scale)) fail(ErrorCode::Arg, "'scale' must be a finite number, got ", scale);
}

// An activation (x, y, dy, dx): f32, or bf16 beside a bf16/f16 weight (whose products round to bf16
// anyway, so a bf16 activation loses nothing more there and halves its memory traffic).
void need_activation(const Tensor& t, const char* name, const Tensor& w) {
  if (w.dtype() == DType::F32) {
    if (t.dtype() != DType::F32) {
      fail(ErrorCode::DType, "'", name, "' must be f32 with an f32 weight (bf16 activations need a bf16 or f16 w), got ",
           dtype_name(t.dtype()));
    }
    return;
  }
  need_dtype(t, name, {DType::F32, DType::BF16});
}

}  // namespace

namespace {
// x_packed (ops/lora_linear.h) in place of x: bf16, 2-D, at least IN + R columns (a multiple of 8), with bf16/f16 w.
void check_x_packed(const Tensor* x, const Tensor& xp, const Tensor& w, int64_t r) {
  if (x) fail(ErrorCode::Arg, "'x_packed' replaces 'x' (give x null)");
  if (w.dtype() == DType::F32) fail(ErrorCode::DType, "'x_packed' (bf16) goes with a bf16 or f16 w, got an f32 w");
  need_packed(xp, "x_packed", -1, "N", w.dim(1) + r, "in + r", true, xp.device());
}
// wb (ops/lora_linear.h: the kept [W | B], given to the forward and the backward alike): bf16, (OUT, >= IN + R)
// with 16-byte rows, with a bf16/f16 w.
void check_wb(const Tensor& wb, const Tensor& w, int64_t r, Device device) {
  if (w.dtype() == DType::F32) fail(ErrorCode::DType, "'wb' (a kept bf16 [W | B]) goes with a bf16 or f16 w, got an f32 w");
  need_packed(wb, "wb", w.dim(0), "out", w.dim(1) + r, "in + r", true, device);
}
}  // namespace

void check_lora_linear_forward(const LoraLinearForwardArgs& p) {
  const Tensor& x = p.x_packed ? *p.x_packed : need(p.x, "x");
  const Tensor& w = need(p.w, "w");
  const Tensor& a = need(p.a, "a");
  const Tensor& b = need(p.b, "b");
  need_finite_scale(p.scale);
  need_dtype(w, "w", {DType::F32, DType::BF16, DType::F16});
  need_activation(x, "x", w);
  need_dtype(a, "a", {DType::F32});
  need_dtype(b, "b", {DType::F32});
  need_ndim(x, "x", 2);
  need_ndim(w, "w", 2);
  const int64_t n = x.dim(0), in = p.x_packed ? w.dim(1) : x.dim(1), out = w.dim(0);
  need_shape(w, "w", {out, in}, "(out, in) with in = x's columns");
  need_ndim(a, "a", 2);
  const int64_t r = a.dim(0);
  need_shape(a, "a", {r, in}, "(r, in) with in = x's columns");
  need_shape(b, "b", {out, r}, "(out, r) with out = w's rows and r = a's rows");
  if (p.x_packed) check_x_packed(p.x, *p.x_packed, w, r);
  if (p.bias) {
    need_dtype(*p.bias, "bias", {DType::F32});
    need_shape(*p.bias, "bias", {out}, "(out,) with out = w's rows");
    need_same_device(*p.bias, "bias", x.device());
  }
  const Tensor& y = need(p.y, "y");
  const Tensor& u = need(p.u, "u");
  need_activation(y, "y", w);
  need_dtype(u, "u", {DType::F32});
  need_shape(y, "y", {n, out}, "(N, out)");
  need_shape(u, "u", {n, r}, "(N, r)");
  for (auto [t, name] : {std::pair{&w, "w"}, {&a, "a"}, {&b, "b"}, {&y, "y"}, {&u, "u"}}) {
    need_same_device(*t, name, x.device());
  }
  if (p.residual) {
    const Tensor& res = *p.residual;
    need_dtype(res, "residual", {DType::F32});
    if (y.dtype() != DType::F32) fail(ErrorCode::DType, "'residual' is added into an f32 y, got a ", dtype_name(y.dtype()), " y");
    need_shape(res, "residual", {n, out}, "(N, out): y's shape");
    need_same_device(res, "residual", x.device());
    if (res.data() != nullptr && res.data() == y.data()) fail(ErrorCode::Arg, "'residual' must not be y itself");
  }
  if (p.wb) check_wb(*p.wb, w, r, x.device());
  if (p.u_unused && !p.x_packed) fail(ErrorCode::Arg, "'u_unused' goes with 'x_packed' (where s·u is left instead)");
  if (p.factors_packed && !(p.wb && p.wb_has_w))
    fail(ErrorCode::Arg, "'factors_packed' needs the kept 'wb' with W in it (wb_has_w): lora_pack_factors writes B there");
}

void lora_linear_forward(const LoraLinearForwardArgs& p) {
  check_lora_linear_forward(p);
  run_op((p.x_packed ? p.x_packed : p.x)->device(), &Backend::lora_linear_forward, "lora_linear_forward", p);
}

void check_lora_linear_backward(const LoraLinearBackwardArgs& p) {
  const Tensor& dy = need(p.dy, "dy");
  const Tensor& x = p.x_packed ? *p.x_packed : need(p.x, "x");
  const Tensor& w = need(p.w, "w");
  const Tensor& a = need(p.a, "a");
  const Tensor& b = need(p.b, "b");
  const Tensor& u = need(p.u, "u");
  need_finite_scale(p.scale);
  need_dtype(w, "w", {DType::F32, DType::BF16, DType::F16});
  need_activation(dy, "dy", w);
  need_activation(x, "x", w);
  need_dtype(a, "a", {DType::F32});
  need_dtype(b, "b", {DType::F32});
  need_dtype(u, "u", {DType::F32});
  need_ndim(x, "x", 2);
  need_ndim(w, "w", 2);
  need_ndim(a, "a", 2);
  const int64_t n = x.dim(0), in = p.x_packed ? w.dim(1) : x.dim(1), out = w.dim(0), r = a.dim(0);
  if (p.x_packed) check_x_packed(p.x, *p.x_packed, w, r);
  need_shape(w, "w", {out, in}, "(out, in) with in = x's columns");
  need_shape(a, "a", {r, in}, "(r, in) with in = x's columns");
  need_shape(b, "b", {out, r}, "(out, r) with out = w's rows and r = a's rows");
  need_shape(dy, "dy", {n, out}, "(N, out): the gradient of y");
  need_shape(u, "u", {n, r}, "(N, r): the u that the forward returned");
  if (p.dy_packed) {
    const Tensor& dp = *p.dy_packed;
    if (w.dtype() == DType::F32) fail(ErrorCode::DType, "'dy_packed' (bf16) goes with a bf16 or f16 w, got an f32 w");
    need_packed(dp, "dy_packed", n, "N", out + r, "out + r", true, x.device());
  }
  if (p.wb) check_wb(*p.wb, w, r, x.device());
  if (p.su_packed && !p.x_packed) fail(ErrorCode::Arg, "'su_packed' says where s·u lies in 'x_packed': give x_packed");
  const Tensor& da = need(p.da, "da");
  const Tensor& db = need(p.db, "db");
  need_dtype(da, "da", {DType::F32});
  need_dtype(db, "db", {DType::F32});
  need_shape(da, "da", {r, in}, "(r, in)");
  need_shape(db, "db", {out, r}, "(out, r)");
  if (p.accumulate_dx && !p.dx) fail(ErrorCode::Arg, "lora_linear_backward: accumulate_dx without dx");
  if (p.dx) {
    need_activation(*p.dx, "dx", w);
    need_shape(*p.dx, "dx", {n, in}, "(N, in)");
    need_same_device(*p.dx, "dx", x.device());
  }
  for (auto [t, name] : {std::pair{&dy, "dy"}, {&w, "w"}, {&a, "a"}, {&b, "b"}, {&u, "u"}, {&da, "da"}, {&db, "db"}}) {
    need_same_device(*t, name, x.device());
  }
}

void lora_linear_backward(const LoraLinearBackwardArgs& p) {
  check_lora_linear_backward(p);
  run_op((p.x_packed ? p.x_packed : p.x)->device(), &Backend::lora_linear_backward, "lora_linear_backward", p);
}

}  // namespace instill
