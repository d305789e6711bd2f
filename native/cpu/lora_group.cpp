// CPU lora_group (ops/lora_group.h): the members' lora_linear in order, each with its own u (copied out of and
// into the group's (N, m·R) u), dx summed over them inside each product (accumulate_dx) as the model did
// member by member: the same bits. The CPU has nothing to share between the members (its products read
// their operands where they lie), so the op exists here for the model's one code path.
#include <cstring>

#include "cpu/ops.h"

namespace instill {
namespace cpu {

namespace {
// Member i's R columns of the group's u, to or from a contiguous (N, R) tensor.
void copy_columns(const Tensor& group, int i, Tensor& member, bool into_member) {
  const int64_t n = group.dim(0), ld = group.dim(1), r = member.dim(1);
  float* g = group.data_as<float>();
  float* m = member.data_as<float>();
  for (int64_t row = 0; row < n; ++row) {
    float* gp = g + row * ld + i * r;
    float* mp = m + row * r;
    if (into_member) std::memcpy(mp, gp, sizeof(float) * static_cast<size_t>(r));
    else std::memcpy(gp, mp, sizeof(float) * static_cast<size_t>(r));
  }
}
// x itself, or (x_packed) a bf16 copy of its first IN columns in `own`
const Tensor* plain_x(const Tensor* x, const Tensor* x_packed, int64_t in, Tensor& own) {
  if (!x_packed) return x;
  const int64_t n = x_packed->dim(0), ld = x_packed->dim(1);
  own = Tensor::empty({n, in}, DType::BF16);
  for (int64_t row = 0; row < n; ++row)
    std::memcpy(own.data_as<uint16_t>() + row * in, x_packed->data_as<uint16_t>() + row * ld, sizeof(uint16_t) * static_cast<size_t>(in));
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
    copy_columns(*p.u, i, u, false);
  }
}

void lora_group_backward(const LoraGroupBackwardArgs& p) {
  Tensor own;
  const Tensor* x = plain_x(p.x, p.x_packed, p.w[0]->dim(1), own);
  const int64_t n = x->dim(0), r = p.a[0]->dim(0);
  Tensor u = Tensor::empty({n, r}, DType::F32);
  int64_t off = 0;
  for (int i = 0; i < p.m; ++i) {
    copy_columns(*p.u, i, u, true);
    const int64_t o = p.w[i]->dim(0);
    Tensor dy;  // member i's columns of dy_packed (bf16), when the dy came packed
    if (p.dy_packed) {
      dy = Tensor::empty({n, o}, DType::BF16);
      const int64_t ld = p.dy_packed->dim(1);
      for (int64_t row = 0; row < n; ++row)
        std::memcpy(dy.data_as<uint16_t>() + row * o, p.dy_packed->data_as<uint16_t>() + row * ld + off, sizeof(uint16_t) * static_cast<size_t>(o));
    }
    off += o;
    LoraLinearBackwardArgs args{p.dy_packed ? &dy : p.dy[i], x, p.w[i], p.a[i], p.b[i], &u, p.scale, p.dx, p.da[i], p.db[i],
                                p.accumulate, i > 0 || p.accumulate_dx};
    cpu::lora_linear_backward(args);
  }
}

}  // namespace cpu
}  // namespace instill
