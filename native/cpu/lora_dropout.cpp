// CPU lora_dropout (see ops/lora_dropout.h): lora_linear's GEMMs with the low-rank
// branch fed by a regenerated dropout mask. Forward: xd (scratch), u = xd·Aᵀ, then one
// two-term GEMM [x | s·u]·[W | B]ᵀ + bias. Backward: g = dy·B, dx = dy·W then
// dx += s·(g·A) ⊙ mask/(1−p), dA = s·gᵀ·xd, dB = s·dyᵀ·u.
#include "cpu/activations.h"
#include "cpu/gemm.h"
#include "cpu/model_ops.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {

namespace {
GemmOperand op(const Tensor& t, bool trans) { return GemmOperand{t.data(), t.dtype(), t.dim(1), trans}; }

// out = x ⊙ mask / (1 − p)  (or, with accumulate_into, out += y ⊙ mask · s / (1 − p))
void apply_mask(const float* src, float* dst, int64_t count, float p, uint32_t seed, float mul, bool add) {
  const uint64_t threshold = static_cast<uint64_t>(static_cast<double>(p) * 4294967296.0);
  const float keep = mul / (1.0f - p);
  parallel_range(count, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float m = dropout_hash(seed, static_cast<uint64_t>(i)) >= threshold ? keep : 0.0f;
      dst[i] = add ? dst[i] + src[i] * m : src[i] * m;
    }
  });
}
}  // namespace

void lora_dropout_forward(const LoraDropoutForwardArgs& p) {
  if (p.linear.x->dtype() == DType::BF16 || p.linear.y->dtype() == DType::BF16) {  // bf16 activations
    const Tensor x = f32_of(*p.linear.x);
    Tensor y = f32_out(*p.linear.y, false);
    LoraDropoutForwardArgs q = p;
    q.linear.x = &x;
    q.linear.y = &y;
    cpu::lora_dropout_forward(q);
    store_f32(y, *p.linear.y);
    return;
  }
  const auto& l = p.linear;
  const Tensor &x = *l.x, &w = *l.w, &a = *l.a, &b = *l.b;
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0), r = a.dim(0);
  Tensor xd = Tensor::empty({n, in}, DType::F32);
  apply_mask(x.data_as<float>(), xd.data_as<float>(), n * in, p.p, p.seed, 1.0f, false);
  gemm(n, r, in, 1.0f, op(xd, false), op(a, true), 0.0f, l.u->data_as<float>(), r);
  GemmTerm terms[2] = {
      {op(x, false), op(w, true), in, 1.0f},
      {op(*l.u, false), op(b, true), r, l.scale},
  };
  gemm(n, out, terms, 2, 0.0f, l.y->data_as<float>(), out, l.bias ? l.bias->data_as<float>() : nullptr);
}

void lora_dropout_backward(const LoraDropoutBackwardArgs& p) {
  const auto& pl = p.linear;
  if (pl.dy->dtype() == DType::BF16 || pl.x->dtype() == DType::BF16 || (pl.dx && pl.dx->dtype() == DType::BF16)) {
    const Tensor dy = f32_of(*pl.dy), x = f32_of(*pl.x);
    Tensor dx = pl.dx ? f32_out(*pl.dx, pl.accumulate_dx) : Tensor();
    LoraDropoutBackwardArgs q = p;
    q.linear.dy = &dy;
    q.linear.x = &x;
    q.linear.dx = pl.dx ? &dx : nullptr;
    cpu::lora_dropout_backward(q);
    if (pl.dx) store_f32(dx, *pl.dx);
    return;
  }
  const auto& l = p.linear;
  const Tensor &dy = *l.dy, &x = *l.x, &w = *l.w, &a = *l.a, &b = *l.b, &u = *l.u;
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0), r = a.dim(0);
  Tensor g = Tensor::empty({n, r}, DType::F32);
  gemm(n, r, out, 1.0f, op(dy, false), op(b, false), 0.0f, g.data_as<float>(), r);
  Tensor scratch = Tensor::empty({n, in}, DType::F32);
  if (l.dx) {
    gemm(n, in, out, 1.0f, op(dy, false), op(w, false), l.accumulate_dx ? 1.0f : 0.0f, l.dx->data_as<float>(), in);
    gemm(n, in, r, 1.0f, op(g, false), op(a, false), 0.0f, scratch.data_as<float>(), in);
    apply_mask(scratch.data_as<float>(), l.dx->data_as<float>(), n * in, p.p, p.seed, l.scale, true);
  }
  apply_mask(x.data_as<float>(), scratch.data_as<float>(), n * in, p.p, p.seed, 1.0f, false);  // xd
  const float beta = l.accumulate ? 1.0f : 0.0f;
  gemm(r, in, n, l.scale, op(g, true), op(scratch, false), beta, l.da->data_as<float>(), in);
  gemm(out, r, n, l.scale, op(dy, true), op(u, false), beta, l.db->data_as<float>(), r);
}

}  // namespace cpu
}  // namespace instill
