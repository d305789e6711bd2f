// CPU fused LoRA linear (see ops/lora_linear.h for the math).
//
// Forward is two GEMMs: u = x·Aᵀ, then one GEMM whose K range is x's columns
// followed by u's, against W's columns followed by B's, with s applied while u
// is packed; bias is added in the same output tile. Backward is four: g = dy·B,
// dx = [dy | s·g]·[W ; A] as one GEMM, dA = s·gᵀ·x, dB = s·dyᵀ·u.
// bf16 activations: x and dy go to the GEMM as they are (it reads bf16 operands); y and dx are
// computed in f32 and rounded once (cpu/activations.h). A residual is added to y after the product.
#include "cpu/activations.h"
#include "cpu/gemm.h"
#include "cpu/model_ops.h"
#include "cpu/ops.h"
#include "runtime/op_profile.h"

namespace instill {
namespace cpu {

namespace {
GemmOperand op(const Tensor& t, bool trans) { return GemmOperand{t.data(), t.dtype(), t.dim(1), trans}; }
}  // namespace

void lora_linear_forward(const LoraLinearForwardArgs& p) {
  if (p.x_packed) fail(ErrorCode::Unsupported, "lora_linear on the CPU takes x, not x_packed (the CUDA backend's packed operand)");
  const Tensor &x = *p.x, &w = *p.w, &a = *p.a, &b = *p.b;
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0), r = a.dim(0);
  float* u = p.u->data_as<float>();
  {
    const OpPart part("u = x A^T", Device::CPU);
    gemm(n, r, in, 1.0f, op(x, false), op(a, true), 0.0f, u, r);
  }
  const OpPart part("y = [x | s u] [W | B]^T", Device::CPU);
  GemmTerm terms[2] = {
      {op(x, false), op(w, true), in, 1.0f},
      {op(*p.u, false), op(b, true), r, p.scale},
  };
  Tensor y = f32_out(*p.y, false);
  gemm(n, out, terms, 2, 0.0f, y.data_as<float>(), out, p.bias ? p.bias->data_as<float>() : nullptr);
  store_f32(y, *p.y);
  if (p.residual) cpu::add(AddArgs{p.y, p.residual, p.y});  // the same f32 sum as the separate add it replaces
}

void lora_linear_backward(const LoraLinearBackwardArgs& p) {
  if (p.x_packed) fail(ErrorCode::Unsupported, "lora_linear on the CPU takes x, not x_packed (the CUDA backend's packed operand)");
  const Tensor &dy = *p.dy, &x = *p.x, &w = *p.w, &a = *p.a, &b = *p.b, &u = *p.u;
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0), r = a.dim(0);
  Tensor g = Tensor::empty({n, r}, DType::F32);
  {
    const OpPart part("g = dy B", Device::CPU);
    gemm(n, r, out, 1.0f, op(dy, false), op(b, false), 0.0f, g.data_as<float>(), r);
  }
  if (p.dx) {
    const OpPart part("dx = [dy | s g] [W ; A]", Device::CPU);
    GemmTerm terms[2] = {
        {op(dy, false), op(w, false), out, 1.0f},
        {op(g, false), op(a, false), r, p.scale},
    };
    Tensor dx = f32_out(*p.dx, p.accumulate_dx);
    gemm(n, in, terms, 2, p.accumulate_dx ? 1.0f : 0.0f, dx.data_as<float>(), in);
    store_f32(dx, *p.dx);
  }
  const float beta = p.accumulate ? 1.0f : 0.0f;
  {
    const OpPart part("dA = s g^T x", Device::CPU);
    gemm(r, in, n, p.scale, op(g, true), op(x, false), beta, p.da->data_as<float>(), in);
  }
  const OpPart part("dB = s dy^T u", Device::CPU);
  gemm(out, r, n, p.scale, op(dy, true), op(u, false), beta, p.db->data_as<float>(), r);
}

}  // namespace cpu
}  // namespace instill
