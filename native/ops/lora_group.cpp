#include "ops/lora_group.h"

#include <cmath>
#include <string>

#include "ops/backend.h"
#include "ops/check.h"

namespace instill {

namespace {

// "w[1]" and the like: the member's argument in messages (need()'s names are C strings that outlive the call)
struct MemberNames {
  std::string s[kMaxLoraGroup];
  MemberNames(const char* arg) {
    for (int i = 0; i < kMaxLoraGroup; ++i) s[i] = std::string(arg) + "[" + std::to_string(i) + "]";
  }
  const char* operator[](int i) const { return s[i].c_str(); }
};

void need_members(int m) {
  if (m < 1 || m > kMaxLoraGroup) fail(ErrorCode::Arg, "lora_group: 1 to ", kMaxLoraGroup, " members, got ", m);
}

// An activation beside the group's weight dtype: f32, or bf16 beside bf16/f16 weights (as lora_linear's).
void need_activation(const Tensor& t, const char* name, bool f32_weights) {
  if (f32_weights) {
    if (t.dtype() != DType::F32) {
      fail(ErrorCode::DType, "'", name, "' must be f32 with f32 weights (bf16 activations need bf16 or f16 weights), got ",
           dtype_name(t.dtype()));
    }
    return;
  }
  need_dtype(t, name, {DType::F32, DType::BF16});
}

// The members' w, a, b (and their rank R, the sum of OUT_i) against x; all on x's device, one weight dtype.
struct Members {
  int64_t r = 0, sum_out = 0;
  bool f32_weights = false;
};
Members check_members(const Tensor& x, int64_t in, int m, const Tensor* const* w, const Tensor* const* a,
                      const Tensor* const* b) {
  static const MemberNames wn("w"), an("a"), bn("b");
  need_ndim(x, "x", 2);
  Members out;
  for (int i = 0; i < m; ++i) {
    const Tensor& wi = need(w[i], wn[i]);
    const Tensor& ai = need(a[i], an[i]);
    const Tensor& bi = need(b[i], bn[i]);
    need_dtype(wi, wn[i], {DType::F32, DType::BF16, DType::F16});
    need_dtype(ai, an[i], {DType::F32});
    need_dtype(bi, bn[i], {DType::F32});
    need_ndim(wi, wn[i], 2);
    need_ndim(ai, an[i], 2);
    const int64_t o = wi.dim(0), r = ai.dim(0);
    need_shape(wi, wn[i], {o, in}, "(out, in) with in = x's columns");
    need_shape(ai, an[i], {r, in}, "(r, in) with in = x's columns");
    need_shape(bi, bn[i], {o, r}, "(out, r) with out = w's rows and r = a's rows");
    if (i == 0) {
      out.r = r;
      out.f32_weights = wi.dtype() == DType::F32;
    } else {
      if (r != out.r) fail(ErrorCode::Shape, "lora_group: every member has the same rank; a[0] has ", out.r, " rows, ", an[i], " ", r);
      if ((wi.dtype() == DType::F32) != out.f32_weights) {
        fail(ErrorCode::DType, "lora_group: the members' weights are all f32 or all bf16/f16; ", wn[i], " is ",
             dtype_name(wi.dtype()), ", w[0] ", dtype_name(w[0]->dtype()));
      }
    }
    out.sum_out += o;
    need_same_device(wi, wn[i], x.device());
    need_same_device(ai, an[i], x.device());
    need_same_device(bi, bn[i], x.device());
  }
  return out;
}

// x (N, IN), or with x_packed (x null) its first IN columns, IN = w[0]'s columns: the x the members read, and IN.
const Tensor& group_x(const Tensor* x, const Tensor* x_packed, const Tensor* const* w, int64_t& in) {
  if (!x_packed) {
    const Tensor& t = need(x, "x");
    need_ndim(t, "x", 2);
    in = t.dim(1);
    return t;
  }
  if (x) fail(ErrorCode::Arg, "lora_group: 'x_packed' replaces 'x' (give x null)");
  const Tensor& w0 = need(w[0], "w[0]");
  need_ndim(w0, "w[0]", 2);
  in = w0.dim(1);
  return *x_packed;
}

void check_x_packed(const Tensor& xp, int64_t in, int m, const Members& mem) {
  if (mem.f32_weights) fail(ErrorCode::DType, "'x_packed' (bf16) goes with bf16 or f16 weights, got f32 ones");
  need_packed(xp, "x_packed", -1, "N", in + m * mem.r, "in + m·r", true, xp.device());
}

// What the forward and backward check alike: the members, x (or x_packed), the scale; x and IN for the rest.
struct GroupCheck {
  const Tensor& x;
  int64_t in;
  Members mem;
};
template <typename Args>
GroupCheck check_group(const Args& p) {
  need_members(p.m);
  int64_t in = 0;
  const Tensor& x = group_x(p.x, p.x_packed, p.w, in);
  if (!std::isfinite(p.scale)) fail(ErrorCode::Arg, "'scale' must be a finite number, got ", p.scale);
  const Members mem = check_members(x, in, p.m, p.w, p.a, p.b);
  need_activation(x, "x", mem.f32_weights);
  if (p.x_packed) check_x_packed(x, in, p.m, mem);
  return GroupCheck{x, in, mem};
}

void check_kept(const Tensor& kept, const Tensor& x, int64_t in, int m, const Members& mem) {
  if (mem.f32_weights) fail(ErrorCode::DType, "'kept' (a bf16 matrix of the group's weights) goes with bf16 or f16 weights, got f32 ones");
  need_packed(kept, "kept", mem.sum_out + m * mem.r, "sum of out + m·r", in + m * mem.r, "in + m·r", true, x.device());
}

}  // namespace

void lora_group_forward(const LoraGroupForwardArgs& p) {
  static const MemberNames yn("y"), biasn("bias");
  const GroupCheck gc = check_group(p);
  const Tensor& x = gc.x;
  const int64_t n = x.dim(0), in = gc.in;
  const Members& mem = gc.mem;
  for (int i = 0; i < p.m; ++i) {
    const int64_t o = p.w[i]->dim(0);
    const Tensor& y = need(p.y[i], yn[i]);
    need_activation(y, yn[i], mem.f32_weights);
    need_shape(y, yn[i], {n, o}, "(N, out)");
    need_same_device(y, yn[i], x.device());
    if (p.bias[i]) {
      need_dtype(*p.bias[i], biasn[i], {DType::F32});
      need_shape(*p.bias[i], biasn[i], {o}, "(out,) with out = w's rows");
      need_same_device(*p.bias[i], biasn[i], x.device());
    }
  }
  const Tensor& u = need(p.u, "u");
  need_dtype(u, "u", {DType::F32});
  need_shape(u, "u", {n, p.m * mem.r}, "(N, m·r): each member's u side by side");
  need_same_device(u, "u", x.device());
  if (p.kept) check_kept(*p.kept, x, in, p.m, mem);
  if (p.u_unused && !p.x_packed) fail(ErrorCode::Arg, "'u_unused' goes with 'x_packed' (where s·u is left instead)");
  if (p.factors_packed && !(p.kept && p.kept_has_w))
    fail(ErrorCode::Arg, "'factors_packed' needs the 'kept' matrix with W in it (kept_has_w): lora_pack_factors writes the factors there");
  run_op(x.device(), &Backend::lora_group_forward, "lora_group_forward", p);
}

void lora_group_backward(const LoraGroupBackwardArgs& p) {
  static const MemberNames dyn("dy"), dan("da"), dbn("db");
  const GroupCheck gc = check_group(p);
  const Tensor& x = gc.x;
  const int64_t n = x.dim(0), in = gc.in;
  const Members& mem = gc.mem;
  if (p.dy_packed) {
    if (mem.f32_weights) fail(ErrorCode::DType, "'dy_packed' (bf16) goes with bf16 or f16 weights, got f32 ones");
    need_packed(*p.dy_packed, "dy_packed", n, "N", mem.sum_out + p.m * mem.r, "sum of out + m·r", true, x.device());
  }
  for (int i = 0; i < p.m; ++i) {
    const int64_t o = p.w[i]->dim(0);
    if (p.dy_packed) {
      if (p.dy[i]) fail(ErrorCode::Arg, "lora_group_backward: 'dy_packed' replaces every dy (", dyn[i], " given)");
    } else {
      const Tensor& dy = need(p.dy[i], dyn[i]);
      need_activation(dy, dyn[i], mem.f32_weights);
      need_shape(dy, dyn[i], {n, o}, "(N, out): the gradient of y");
      need_same_device(dy, dyn[i], x.device());
    }
    const Tensor& da = need(p.da[i], dan[i]);
    const Tensor& db = need(p.db[i], dbn[i]);
    need_dtype(da, dan[i], {DType::F32});
    need_dtype(db, dbn[i], {DType::F32});
    need_shape(da, dan[i], {mem.r, in}, "(r, in)");
    need_shape(db, dbn[i], {o, mem.r}, "(out, r)");
    for (auto [t, name] : {std::pair{&da, dan[i]}, {&db, dbn[i]}}) need_same_device(*t, name, x.device());
  }
  const Tensor& u = need(p.u, "u");
  need_dtype(u, "u", {DType::F32});
  need_shape(u, "u", {n, p.m * mem.r}, "(N, m·r): the u that the forward returned");
  need_same_device(u, "u", x.device());
  if (p.accumulate_dx && !p.dx) fail(ErrorCode::Arg, "lora_group_backward: accumulate_dx without dx");
  if (p.dx) {
    need_activation(*p.dx, "dx", mem.f32_weights);
    need_shape(*p.dx, "dx", {n, in}, "(N, in)");
    need_same_device(*p.dx, "dx", x.device());
  }
  if (p.kept) check_kept(*p.kept, x, in, p.m, mem);
  if (p.su_packed && !p.x_packed) fail(ErrorCode::Arg, "'su_packed' says where s·u lies in 'x_packed': give x_packed");
  run_op(x.device(), &Backend::lora_group_backward, "lora_group_backward", p);
}

}  // namespace instill
