#include "ops/rope.h"

#include "ops/backend.h"
#include "ops/check.h"

namespace instill {

namespace {
// in_packed (ops/rope.h): x, x2 and x3 in its columns, out, out2 and out3 contiguous and giving their shapes
void check_in_packed(const RopeArgs& p) {
  if (p.x || p.x2) fail(ErrorCode::Arg, "rope: 'in_packed' replaces 'x' and 'x2' (give them null)");
  if (p.out_packed) fail(ErrorCode::Arg, "rope: 'in_packed' and 'out_packed' do not go together");
  const Tensor& out = need(p.out, "out");
  need_ndim(out, "out", 3);
  const int64_t n = out.dim(0), d = out.dim(2);
  const std::pair<Tensor*, int64_t> outs[3] = {{p.out, p.in_col}, {p.out2, p.in2_col}, {p.out3, p.in3_col}};
  const char* names[3] = {"out", "out2", "out3"};
  for (int i = 0; i < 3; ++i) {
    if (!outs[i].first) continue;
    const Tensor& o = *outs[i].first;
    need_dtype(o, names[i], {DType::BF16});
    need_ndim(o, names[i], 3);
    need_shape(o, names[i], {n, o.dim(1), d}, "(N, heads, D): out's N and D");
    need_same_device(o, names[i], out.device());
    need_columns(*p.in_packed, "in_packed", n, outs[i].second, o.dim(1) * d, DType::BF16, out.device());
  }
}

void check(const RopeArgs& p) {
  if (p.in_packed) check_in_packed(p);
  else if (p.out3) fail(ErrorCode::Arg, "rope: 'out3' goes with 'in_packed' (the columns it copies)");
  const Tensor& x = p.in_packed ? *p.out : need(p.x, "x");  // (in_packed: out's shape is x's)
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
  } else if (!p.in_packed) {
    const Tensor& out = need(p.out, "out");
    if (out.dtype() != x.dtype()) fail(ErrorCode::DType, "'out' must be ", dtype_name(x.dtype()), " like x, got ", dtype_name(out.dtype()));
    need_shape(out, "out", {n, h, d}, "(N, H, D) like x");
    need_same_device(out, "out", x.device());
    if (!p.x2 != !p.out2) fail(ErrorCode::Arg, "rope: 'x2' and 'out2' go together (both or neither)");
  }
  if (p.x2) {  // (null with in_packed, whose out2 is checked above)
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
  run_op((p.x ? p.x : p.out)->device(), &Backend::rope_forward, "rope_forward", p);
}

void rope_backward(const RopeArgs& p) {
  check(p);
  run_op((p.x ? p.x : p.out)->device(), &Backend::rope_backward, "rope_backward", p);
}

}  // namespace instill
