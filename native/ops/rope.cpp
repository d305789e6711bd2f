#include "ops/rope.h"

#include "ops/backend.h"
#include "ops/check.h"

namespace instill {

namespace {
void check(const RopeArgs& p) {
  const Tensor& x = need(p.x, "x");
  const Tensor& pos = need(p.positions, "positions");
  const Tensor& f = need(p.inv_freq, "inv_freq");
  need_dtype(x, "x", {DType::F32, DType::BF16});
  need_dtype(f, "inv_freq", {DType::F32});
  need_dtype(pos, "positions", {DType::I32});
  need_ndim(x, "x", 3);
  const int64_t n = x.dim(0), h = x.dim(1), d = x.dim(2);
  if (d % 2 != 0) fail(ErrorCode::Shape, "rope needs an even head dimension, got ", d);
  need_shape(pos, "positions", {n}, "(N,)");
  need_shape(f, "inv_freq", {d / 2}, "(D/2,)");
  for (auto [t, name] : {std::pair{&pos, "positions"}, {&f, "inv_freq"}}) need_same_device(*t, name, x.device());
  const bool packed = p.out_packed != nullptr;
  if (packed) {  // out (and out2) in columns of out_packed instead
    if (p.out || p.out2) fail(ErrorCode::Arg, "rope: 'out_packed' replaces 'out' and 'out2' (give them null)");
    need_columns(*p.out_packed, "out_packed", n, p.out_col, h * d, x.dtype(), x.device());
    if (p.x2) need_columns(*p.out_packed, "out_packed", n, p.out2_col, p.x2->dim(1) * d, x.dtype(), x.device());
  } else {
    const Tensor& out = need(p.out, "out");
    if (out.dtype() != x.dtype()) fail(ErrorCode::DType, "'out' must be ", dtype_name(x.dtype()), " like x, got ", dtype_name(out.dtype()));
    need_shape(out, "out", {n, h, d}, "(N, H, D) like x");
    need_same_device(out, "out", x.device());
    if (!p.x2 != !p.out2) fail(ErrorCode::Arg, "rope: 'x2' and 'out2' go together (both or neither)");
  }
  if (p.x2) {
    const Tensor& x2 = *p.x2;
    if (x2.dtype() != x.dtype()) fail(ErrorCode::DType, "'x2' must be ", dtype_name(x.dtype()), " like x, got ", dtype_name(x2.dtype()));
    need_ndim(x2, "x2", 3);
    need_shape(x2, "x2", {n, x2.dim(1), d}, "(N, H2, D): x's N and D");
    need_same_device(x2, "x2", x.device());
    if (!packed) {
      const Tensor& out2 = *p.out2;
      if (out2.dtype() != x.dtype()) fail(ErrorCode::DType, "'out2' must be ", dtype_name(x.dtype()), " like x, got ", dtype_name(out2.dtype()));
      need_shape(out2, "out2", {n, x2.dim(1), d}, "(N, H2, D) like x2");
      need_same_device(out2, "out2", x.device());
    }
  }
  std::vector<int32_t> host;
  const Tensor* ph = p.positions_host;
  if (ph) {
    need_dtype(*ph, "positions_host", {DType::I32});
    need_shape(*ph, "positions_host", {n}, "(N,) like positions");
    need_same_device(*ph, "positions_host", Device::CPU);
  }
  const int32_t* pp = ph ? ph->data_as<int32_t>() : host_i32(pos, host);
  for (int64_t i = 0; i < n; ++i) {
    if (pp[i] < 0) fail(ErrorCode::Range, "position ", pp[i], " at index ", i, " is negative");
  }
}
}  // namespace

void rope_forward(const RopeArgs& p) {
  check(p);
  run_op(p.x->device(), &Backend::rope_forward, "rope_forward", p);
}

void rope_backward(const RopeArgs& p) {
  check(p);
  run_op(p.x->device(), &Backend::rope_backward, "rope_backward", p);
}

}  // namespace instill
