// The CUDA backend's one matrix product, used by matmul, lora_linear and
// linear_cross_entropy (internal to native/cuda).
//
//   C (M, N) = alpha · Σ_s op(A_s) · op(B_s)  + bias  + beta · C
//
// over up to two K segments s (K[1] = 0 for one): this is how LoRA's low-rank
// term is fused into the frozen layer's output tile (y = [x | s·u]·[W | B]ᵀ) and
// dx = [dy | s·g]·[W ; A] runs as one product. Each operand has its own dtype
// (f32 | bf16 | f16), transposition, leading dimension and scale (applied before
// rounding), so f32 activations meet bf16 weights without a conversion pass.
//   A_s element (m, k) = trans ? p[k·ld + m] : p[m·ld + k]      logical (M, K_s)
//   B_s element (k, n) = trans ? p[n·ld + k] : p[k·ld + n]      logical (K_s, N)
// Arithmetic: operands rounded to bf16, products accumulated in f32 on the
// tensor cores (WMMA 16×16×16, sm_80+): bf16 tolerance (~1e-2 relative worst
// case, ~3e-3 typical) against an f32 reference. beta = 0 never reads C (it may
// hold NaN poison). bias (N) f32 or null.
#pragma once

#include <cstdint>

#include "cuda/common.cuh"

namespace instill {
namespace cuda {

struct GemmOperand {
  const void* p = nullptr;
  Elem e = Elem::F32;
  int64_t ld = 0;
  bool trans = false;
  float scale = 1.f;
};

struct GemmArgs {
  int64_t M = 0, N = 0;
  int64_t K[2] = {0, 0};
  GemmOperand a[2];
  GemmOperand b[2];
  float alpha = 1.f, beta = 0.f;
  const float* bias = nullptr;  // (N) or null
  float* c = nullptr;           // (M, N) with row stride ldc
  int64_t ldc = 0;
};

void gemm(const GemmArgs& g);

// Operand views of a 2-D tensor (rows, cols) as stored, optionally transposed.
inline GemmOperand operand(const Tensor& t, bool trans, float scale = 1.f) {
  GemmOperand o;
  o.p = t.data();
  o.e = elem_of(t);
  o.ld = t.dim(1);
  o.trans = trans;
  o.scale = scale;
  return o;
}

}  // namespace cuda
}  // namespace instill
