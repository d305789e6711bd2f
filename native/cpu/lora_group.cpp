// CPU lora_group (ops/lora_group.h): the members' lora_linear in order, each with its own u (copied out of and
// into the group's (N, m·R) u), dx summed over them inside each product (accumulate_dx) as the model did
// member by member: the same bits. The CPU has nothing to share between the members (its products read
// their operands where they lie), so the op exists here for the model's one code path.
#include <cstring>

#include "cpu/ops.h"

namespace instill {
namespace cpu {

namespace {
// Columns col..col + part.dim(1) of wide's rows copied into `part` (a contiguous tensor of the same dtype), or
// (into_part false) part copied into them: a member's u in the group's, x or dy out of a packed operand.
void copy_columns(const Tensor& wide, int64_t col, Tensor& part, bool into_part) {
  const size_t esz = dtype_size(wide.dtype());
  const int64_t n = wide.dim(0), ld = wide.dim(1), w = part.dim(1);
  char* wp = static_cast<char*>(wide.data());
  char* pp = static_cast<char*>(part.data());
  for (int64_t row = 0; row < n; ++row) {
    char* a = wp + (row * ld + col) * esz;
    char* b = pp + row * w * esz;
    if (into_part) std::memcpy(b, a, esz * static_cast<size_t>(w));
    else std::memcpy(a, b, esz * static_cast<size_t>(w));
  }
}
// x itself, or (x_packed) a bf16 copy of its first IN columns in `own`
const Tensor* plain_x(const Tensor* x, const Tensor* x_packed, int64_t in, Tensor& own) {
  if (!x_packed) return x;
  own = Tensor::empty({x_packed->dim(0), in}, DType::BF16);
  copy_columns(*x_packed, 0, own, true);
  return &own;
}
}  // namespace

void lora_group_forward(const LoraGroupForwardArgs& p) {
  Tensor own;
  const Tensor* x = plain_x(p.x, p.x_packed, p.w[0]->dim(1), own);
  const int64_t n = x->dim(0), r = p.a[0]->dim(0);
  Tensor u = Tensor::empty({n, r}, DType::F32);
  for (int i = 0; i < p.m; ++i) {
    LoraLinearForwardArgs args{x, p.w[i], p.bias[i], p.a[i], p.b[i], p.scale, p.y[i], &u};
    cpu::lora_linear_forward(args);
    copy_columns(*p.u, i * r, u, false);
  }
}

void lora_group_backward(const LoraGroupBackwardArgs& p) {
  Tensor own;
  const Tensor* x = plain_x(p.x, p.x_packed, p.w[0]->dim(1), own);
  const int64_t n = x->dim(0), r = p.a[0]->dim(0);
  Tensor u = Tensor::empty({n, r}, DType::F32);
  int64_t off = 0;
  for (int i = 0; i < p.m; ++i) {
    copy_columns(*p.u, i * r, u, true);
    const int64_t o = p.w[i]->dim(0);
    Tensor dy;  // member i's columns of dy_packed (bf16), when the dy came packed
    if (p.dy_packed) {
      dy = Tensor::empty({n, o}, DType::BF16);
      copy_columns(*p.dy_packed, off, dy, true);
    }
    off += o;
    LoraLinearBackwardArgs args{p.dy_packed ? &dy : p.dy[i], x, p.w[i], p.a[i], p.b[i], &u, p.scale, p.dx, p.da[i], p.db[i],
                                p.accumulate, p.dx && (i > 0 || p.accumulate_dx)};
    cpu::lora_linear_backward(args);
  }
}

}  // namespace cpu
}  // namespace instill
