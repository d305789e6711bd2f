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
    if (p.u_a) {
      const int64_t f = g.dim(1);
      need_dtype(*p.u_a, "u_a", {DType::BF16});
      need_ndim(*p.u_a, "u_a", 2);
      need_same_device(*p.u_a, "u_a", g.device());
      if (p.u_a->dim(1) != f) fail(ErrorCode::Shape, "swiglu_forward: 'u_a' must have F = ", f, " columns, got ", p.u_a->dim(1));
      const size_t rows_in_buffer = p.u_a->capacity_bytes() / static_cast<size_t>(2 * f);
      if (p.u_rows <= 0 || p.u_row0 < 0 || static_cast<size_t>(p.u_row0 + p.u_rows) > rows_in_buffer)
        fail(ErrorCode::Shape, "swiglu_forward: rows ", p.u_row0, "..", p.u_row0 + p.u_rows, " of 'u_a' (", rows_in_buffer,
             " rows in its buffer)");
      if (f + p.u_rows > p.out_packed->dim(1))
        fail(ErrorCode::Shape, "swiglu_forward: 'out_packed' has ", p.out_packed->dim(1), " columns, fewer than F + u_rows = ", f + p.u_rows);
      if (!std::isfinite(p.u_scale)) fail(ErrorCode::Arg, "swiglu_forward: 'u_scale' must be finite, got ", p.u_scale);
    }
  } else {
    if (p.u_a) fail(ErrorCode::Arg, "swiglu_forward: 'u_a' needs 'out_packed' (s·u goes into its columns past F)");
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
    if (p.g_b) {
      const int64_t f = g.dim(1);
      need_dtype(*p.g_b, "g_b", {DType::BF16});
      need_ndim(*p.g_b, "g_b", 2);
      need_same_device(*p.g_b, "g_b", g.device());
      if (p.g_b->dim(0) < 2 * f) fail(ErrorCode::Shape, "swiglu_backward: 'g_b' has ", p.g_b->dim(0), " rows, fewer than 2F = ", 2 * f);
      if (p.g_rank <= 0 || p.g_col0 < 0 || p.g_col0 > p.g_b->dim(1) - 2 * p.g_rank)
        fail(ErrorCode::Shape, "swiglu_backward: columns ", p.g_col0, "..", p.g_col0 + 2 * p.g_rank, " of 'g_b' (", p.g_b->dim(1), " columns)");
      if (2 * f + 2 * p.g_rank > p.dgu->dim(1))
        fail(ErrorCode::Shape, "swiglu_backward: 'dgu' has ", p.dgu->dim(1), " columns, fewer than 2F + 2R = ", 2 * f + 2 * p.g_rank);
      if (!std::isfinite(p.g_scale)) fail(ErrorCode::Arg, "swiglu_backward: 'g_scale' must be finite, got ", p.g_scale);
    }
  } else {
    if (p.g_b) fail(ErrorCode::Arg, "swiglu_backward: 'g_b' needs 'dgu' (s·g goes into its columns past 2F)");
    need_like(p.dgate, "dgate", g);
    need_like(p.dup, "dup", g);
  }
  run_op(g.device(), &Backend::swiglu_backward, "swiglu_backward", p);
}

}  // namespace instill
