#include "ops/lora_dropout.h"

#include <cmath>

#include "ops/backend.h"
#include "ops/check.h"

namespace instill {

namespace {
void need_p(float p) {
  if (!(p >= 0.0f && p < 1.0f)) fail(ErrorCode::Arg, "dropout probability must be in [0, 1), got ", p);
}
}  // namespace

void lora_dropout_forward(const LoraDropoutForwardArgs& p) {
  need_p(p.p);
  const Tensor& x = need(p.x, "x");
  const Tensor& w = need(p.w, "w");
  const Tensor& a = need(p.a, "a");
  const Tensor& b = need(p.b, "b");
  need_dtype(x, "x", {DType::F32});
  need_dtype(w, "w", {DType::F32, DType::BF16, DType::F16});
  need_dtype(a, "a", {DType::F32});
  need_dtype(b, "b", {DType::F32});
  need_ndim(x, "x", 2);
  need_ndim(w, "w", 2);
  need_ndim(a, "a", 2);
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0), r = a.dim(0);
  need_shape(w, "w", {out, in}, "(out, in) with in = x's columns");
  need_shape(a, "a", {r, in}, "(r, in) with in = x's columns");
  need_shape(b, "b", {out, r}, "(out, r)");
  if (p.bias) {
    need_dtype(*p.bias, "bias", {DType::F32});
    need_shape(*p.bias, "bias", {out}, "(out,)");
  }
  need_shape(need(p.y, "y"), "y", {n, out}, "(N, out)");
  need_shape(need(p.u, "u"), "u", {n, r}, "(N, r)");
  need_dtype(*p.y, "y", {DType::F32});
  need_dtype(*p.u, "u", {DType::F32});
  if (!std::isfinite(p.scale)) fail(ErrorCode::Arg, "'scale' must be finite");
  for (const Tensor* t : {p.w, p.a, p.b, static_cast<const Tensor*>(p.y), static_cast<const Tensor*>(p.u)}) need_same_device(*t, "tensor", x.device());
  const Backend& be = backend_for(x.device());
  if (!be.lora_dropout_forward) fail(ErrorCode::Unsupported, "lora_dropout forward is not implemented on ", be.name);
  be.lora_dropout_forward(p);
}

void lora_dropout_backward(const LoraDropoutBackwardArgs& p) {
  need_p(p.p);
  const Tensor& x = need(p.x, "x");
  const Tensor& w = need(p.w, "w");
  const Tensor& a = need(p.a, "a");
  const Tensor& b = need(p.b, "b");
  const Tensor& dy = need(p.dy, "dy");
  const Tensor& u = need(p.u, "u");
  for (auto [t, name] : {std::pair{&x, "x"}, {&a, "a"}, {&b, "b"}, {&dy, "dy"}, {&u, "u"}}) need_dtype(*t, name, {DType::F32});
  need_dtype(w, "w", {DType::F32, DType::BF16, DType::F16});
  need_ndim(x, "x", 2);
  need_ndim(w, "w", 2);
  need_ndim(a, "a", 2);
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0), r = a.dim(0);
  need_shape(w, "w", {out, in}, "(out, in)");
  need_shape(a, "a", {r, in}, "(r, in)");
  need_shape(b, "b", {out, r}, "(out, r)");
  need_shape(dy, "dy", {n, out}, "(N, out)");
  need_shape(u, "u", {n, r}, "(N, r)");
  need_shape(need(p.da, "da"), "da", {r, in}, "(r, in)");
  need_shape(need(p.db, "db"), "db", {out, r}, "(out, r)");
  need_dtype(*p.da, "da", {DType::F32});
  need_dtype(*p.db, "db", {DType::F32});
  if (p.dx) {
    need_dtype(*p.dx, "dx", {DType::F32});
    need_shape(*p.dx, "dx", {n, in}, "(N, in)");
  }
  const Backend& be = backend_for(x.device());
  if (!be.lora_dropout_backward) fail(ErrorCode::Unsupported, "lora_dropout backward is not implemented on ", be.name);
  be.lora_dropout_backward(p);
}

}  // namespace instill
