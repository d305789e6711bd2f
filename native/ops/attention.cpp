#include "ops/attention.h"

#include <cmath>
#include <string>

#include "ops/backend.h"
#include "ops/check.h"

namespace instill {

namespace {
// The activations of a call (q, k, v, out, dout, dq, dk, dv) share q's dtype: all f32, or all bf16.
void need_like_q(const Tensor& t, const char* name, const Tensor& q) {
  if (t.dtype() != q.dtype()) {
    fail(ErrorCode::DType, "'", name, "' must be ", dtype_name(q.dtype()), " like q, got ", dtype_name(t.dtype()));
  }
}

void check_common(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu, const Tensor* seg_bounds,
                  float scale) {
  need_dtype(q, "q", {DType::F32, DType::BF16});
  for (auto [t, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}}) {
    need_like_q(*t, name, q);
    need_ndim(*t, name, 3);
    need_same_device(*t, name, q.device());
  }
  const int64_t n = q.dim(0), h = q.dim(1), d = q.dim(2), kvh = k.dim(1);
  need_shape(k, "k", {n, -1, d}, "(N, KVH, D)");
  need_shape(v, "v", {n, kvh, d}, "(N, KVH, D) like k");
  if (kvh <= 0 || h % kvh != 0) fail(ErrorCode::Shape, "query heads (", h, ") must be a multiple of KV heads (", kvh, ")");
  need_dtype(cu, "cu_seqlens", {DType::I32});
  need_ndim(cu, "cu_seqlens", 1);
  if (cu.device() != Device::CPU) need_same_device(cu, "cu_seqlens", q.device());
  if (seg_bounds) {
    need_dtype(*seg_bounds, "seg_bounds", {DType::I32});
    need_shape(*seg_bounds, "seg_bounds", {2, n}, "(2, N)");
    need_same_device(*seg_bounds, "seg_bounds", q.device());
  }
  std::vector<int32_t> host;
  const int32_t* c = host_i32(cu, host);
  const int64_t s1 = cu.dim(0);
  if (s1 < 1 || c[0] != 0 || c[s1 - 1] != n) {
    fail(ErrorCode::Arg, "'cu_seqlens' must start at 0 and end at N = ", n);
  }
  for (int64_t i = 1; i < s1; ++i) {
    if (c[i] < c[i - 1]) fail(ErrorCode::Arg, "'cu_seqlens' must not decrease (index ", i, ")");
  }
  if (!std::isfinite(scale)) fail(ErrorCode::Arg, "'scale' must be finite");
}

// name's values in columns col..col + cols of `packed` (name_packed), in place of the tensor `name` (then null).
void need_in_packed(const Tensor* t, const char* name, const Tensor& packed, int64_t col, int64_t cols, const Tensor& q) {
  const std::string packed_name = std::string(name) + "_packed";
  if (t) fail(ErrorCode::Arg, "'", packed_name, "' replaces '", name, "' (give ", name, " null)");
  need_columns(packed, packed_name.c_str(), q.dim(0), col, cols, q.dtype(), q.device());
}
}  // namespace

void attention_forward(const AttentionForwardArgs& p) {
  const Tensor& q = need(p.q, "q");
  check_common(q, need(p.k, "k"), need(p.v, "v"), need(p.cu_seqlens, "cu_seqlens"), p.seg_bounds, p.scale);
  const Tensor& lse = need(p.lse, "lse");
  if (p.out_packed) {
    need_in_packed(p.out, "out", *p.out_packed, 0, q.dim(1) * q.dim(2), q);
  } else {
    const Tensor& out = need(p.out, "out");
    need_like_q(out, "out", q);
    need_shape(out, "out", {q.dim(0), q.dim(1), q.dim(2)}, "(N, H, D) like q");
    need_same_device(out, "out", q.device());
  }
  need_dtype(lse, "lse", {DType::F32});
  need_shape(lse, "lse", {q.dim(0), q.dim(1)}, "(N, H)");
  need_same_device(lse, "lse", q.device());
  if (p.window < 0) fail(ErrorCode::Arg, "'window' must be >= 0 (0 = no sliding window), got ", p.window);
  run_op(q.device(), &Backend::attention_forward, "attention_forward", p);
}

void attention_decode(const AttentionDecodeArgs& p) {
  const Tensor& q = need(p.q, "q");
  const Tensor& k = need(p.k, "k");
  const Tensor& v = need(p.v, "v");
  const Tensor& kc = need(p.k_cache, "k_cache");
  const Tensor& vc = need(p.v_cache, "v_cache");
  const Tensor& out = need(p.out, "out");
  for (auto [t, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}, {&kc, "k_cache"}, {&vc, "v_cache"}, {&out, "out"}}) {
    need_dtype(*t, name, {DType::F32});
    need_ndim(*t, name, 3);
    need_same_device(*t, name, q.device());
  }
  const int64_t n = q.dim(0), h = q.dim(1), d = q.dim(2), kvh = k.dim(1), tmax = kc.dim(0);
  need_shape(k, "k", {n, kvh, d}, "(n, KVH, D)");
  need_shape(v, "v", {n, kvh, d}, "(n, KVH, D)");
  need_shape(kc, "k_cache", {tmax, kvh, d}, "(T_max, KVH, D)");
  need_shape(vc, "v_cache", {tmax, kvh, d}, "(T_max, KVH, D)");
  need_shape(out, "out", {n, h, d}, "(n, H, D) like q");
  if (h % kvh != 0) fail(ErrorCode::Shape, "query heads (", h, ") must be a multiple of KV heads (", kvh, ")");
  if (p.start < 0 || p.start + n > tmax) {
    fail(ErrorCode::Range, "KV cache holds ", tmax, " tokens; cannot add ", n, " after ", p.start);
  }
  if (!std::isfinite(p.scale)) fail(ErrorCode::Arg, "'scale' must be finite");
  if (p.window < 0) fail(ErrorCode::Arg, "'window' must be >= 0 (0 = no sliding window), got ", p.window);
  run_op(q.device(), &Backend::attention_decode, "attention_decode", p);
}

void attention_backward(const AttentionBackwardArgs& p) {
  const Tensor& q = need(p.q, "q");
  const Tensor& k = need(p.k, "k");
  check_common(q, k, need(p.v, "v"), need(p.cu_seqlens, "cu_seqlens"), p.seg_bounds, p.scale);
  const Shape qs = q.shape(), ks = k.shape();
  if (p.out_packed) need_in_packed(p.out, "out", *p.out_packed, 0, q.dim(1) * q.dim(2), q);
  if (p.dv_packed) need_in_packed(p.dv, "dv", *p.dv_packed, p.dv_col, k.dim(1) * k.dim(2), q);
  for (auto [t, name, s] : {std::tuple{p.dout, "dout", qs}, {p.out_packed ? p.dout : p.out, "out", qs}, {p.dq, "dq", qs},
                            {p.dk, "dk", ks}, {p.dv_packed ? p.dk : p.dv, "dv", ks}}) {
    const Tensor& tt = need(t, name);
    need_like_q(tt, name, q);
    need_same_device(tt, name, q.device());
    if (tt.shape() != s) fail(ErrorCode::Shape, "'", name, "' must have shape ", shape_str(s), ", got ", shape_str(tt.shape()));
  }
  const Tensor& lse = need(p.lse, "lse");
  need_dtype(lse, "lse", {DType::F32});
  need_shape(lse, "lse", {q.dim(0), q.dim(1)}, "(N, H)");
  if (p.window < 0) fail(ErrorCode::Arg, "'window' must be >= 0 (0 = no sliding window), got ", p.window);
  run_op(q.device(), &Backend::attention_backward, "attention_backward", p);
}

}  // namespace instill
