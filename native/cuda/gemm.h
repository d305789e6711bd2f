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

// Converts a row-major block to bf16 with the scale applied before rounding (the
// same rounding the GEMM does to its operands), into a destination with its own
// row stride, so one buffer (rows, ld) can hold several operands side by side
// ([x | s·u] for lora_linear) and later be passed to gemm() as an unscaled
// single-segment bf16 operand, which cuBLASLt takes without another pack:
//   dst[r·ldd + c] = bf16(scale · src[r·lds + c]),  r < rows, c < cols
// src f32 | bf16 | f16. Vector loads and stores (4 elements a thread) when both
// sides' bases and strides are 4-element aligned, scalar otherwise. Queued on
// the backend stream; rows or cols 0 queue nothing.
void pack_bf16(const void* src, Elem e, int64_t lds, float scale, int64_t rows, int64_t cols, __nv_bfloat16* dst,
               int64_t ldd);
// The same with destination row r read from source row row_index[r] (device int32s, each < the source's rows).
void gather_bf16(const void* src, Elem e, int64_t lds, float scale, const int32_t* row_index, int64_t rows,
                 int64_t cols, __nv_bfloat16* dst, int64_t ldd);

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

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
// A bf16 matrix of `cols` columns stored with row stride ld (a view into a packed buffer).
inline GemmOperand bf16_operand(const __nv_bfloat16* p, int64_t ld, bool trans) {
  GemmOperand o;
  o.p = p;
  o.e = Elem::BF16;
  o.ld = ld;
  o.trans = trans;
  return o;
}

}  // namespace cuda
}  // namespace instill
