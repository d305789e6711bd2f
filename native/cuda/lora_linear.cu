// lora_linear on CUDA (ops/lora_linear.h), over the two-segment GEMM (gemm.h).
//
// Forward   u = x·Aᵀ                       one product (N, R)
//           y = [x | s·u] · [W | B]ᵀ + bias   one product: the low-rank term is
//                                            K columns IN..IN+R of y's own tile
// Backward  g  = dy·B                       (N, R) scratch, once
//           dx = [dy | s·g] · [W ; A]        one product
//           dA = s·gᵀ·x,  dB = s·dyᵀ·u       (= or += by beta)
// All operands are rounded to bf16 inside the GEMM (f32 accumulation), so the
// results are within bf16 tolerance of the CPU's f32 kernel, not f32 tolerance.
#include "cuda/gemm.h"
#include "ops/lora_linear.h"

namespace instill {
namespace cuda {

void lora_linear_forward(const LoraLinearForwardArgs& p) {
  const Tensor &x = *p.x, &w = *p.w, &a = *p.a, &b = *p.b;
  const int64_t N = x.dim(0), IN = x.dim(1), OUT = w.dim(0), R = a.dim(0);
  {  // u (N, R) = x (N, IN) · Aᵀ,  A stored (R, IN)
    GemmArgs g;
    g.M = N; g.N = R; g.K[0] = IN;
    g.a[0] = operand(x, false);
    g.b[0] = operand(a, true);
    g.c = p.u->data_as<float>(); g.ldc = R;
    gemm(g);
  }
  {  // y (N, OUT) = x·Wᵀ + s·u·Bᵀ + bias,  W stored (OUT, IN), B stored (OUT, R)
    GemmArgs g;
    g.M = N; g.N = OUT; g.K[0] = IN; g.K[1] = R;
    g.a[0] = operand(x, false);
    g.a[1] = operand(*p.u, false, p.scale);
    g.b[0] = operand(w, true);
    g.b[1] = operand(b, true);
    g.bias = p.bias ? p.bias->data_as<float>() : nullptr;
    g.c = p.y->data_as<float>(); g.ldc = OUT;
    gemm(g);
  }
}

void lora_linear_backward(const LoraLinearBackwardArgs& p) {
  const Tensor &dy = *p.dy, &x = *p.x, &w = *p.w, &a = *p.a, &b = *p.b, &u = *p.u;
  const int64_t N = x.dim(0), IN = x.dim(1), OUT = w.dim(0), R = a.dim(0);
  Tensor gt = Tensor::empty({N, R}, DType::F32, Device::CUDA);  // g = dy·B
  {
    GemmArgs g;
    g.M = N; g.N = R; g.K[0] = OUT;
    g.a[0] = operand(dy, false);
    g.b[0] = operand(b, false);  // B stored (OUT, R) = (K, N)
    g.c = gt.data_as<float>(); g.ldc = R;
    gemm(g);
  }
  if (p.dx) {  // dx (N, IN) = dy·W + s·g·A,  W stored (OUT, IN), A stored (R, IN)
    GemmArgs g;
    g.M = N; g.N = IN; g.K[0] = OUT; g.K[1] = R;
    g.a[0] = operand(dy, false);
    g.a[1] = operand(gt, false, p.scale);
    g.b[0] = operand(w, false);
    g.b[1] = operand(a, false);
    g.c = p.dx->data_as<float>(); g.ldc = IN;
    gemm(g);
  }
  {  // dA (R, IN) = s·gᵀ·x
    GemmArgs g;
    g.M = R; g.N = IN; g.K[0] = N;
    g.a[0] = operand(gt, true);  // g stored (N, R) = (K, M)
    g.b[0] = operand(x, false);
    g.alpha = p.scale; g.beta = p.accumulate ? 1.f : 0.f;
    g.c = p.da->data_as<float>(); g.ldc = IN;
    gemm(g);
  }
  {  // dB (OUT, R) = s·dyᵀ·u
    GemmArgs g;
    g.M = OUT; g.N = R; g.K[0] = N;
    g.a[0] = operand(dy, true);  // dy stored (N, OUT) = (K, M)
    g.b[0] = operand(u, false);
    g.alpha = p.scale; g.beta = p.accumulate ? 1.f : 0.f;
    g.c = p.db->data_as<float>(); g.ldc = R;
    gemm(g);
  }
}

}  // namespace cuda
}  // namespace instill
