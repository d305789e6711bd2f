// The CPU GEMM every CPU kernel is built on.
//
//   C (m, n) = beta * C + sum_t alpha_t * op(A_t) (m, k_t) * op(B_t) (k_t, n)  [+ bias (n)]
//
// The terms share one output tile: their K ranges are concatenated and blocked
// together, so a low-rank term (LoRA's s*u*B^T, K = r) is accumulated in the same
// registers as the main product during its last K block instead of in a second
// pass over C. Operands may be f32, bf16 or f16 (converted to f32 while packing;
// accumulation is always f32).
//
// Algorithm: Goto/BLIS blocking. For each K block (KC): pack all of op(A)'s rows
// into MR-row slivers; for each N panel (NC): pack op(B) into NR-column slivers;
// then MC x (NR*group) tasks run the ISA's micro-kernel over the engine's pool.
// beta == 0 never reads C (it may hold NaN); bias is added on the last K block.
#pragma once

#include <cstdint>

#include "runtime/dtype.h"

namespace instill {
namespace cpu {

// A matrix operand. For A (rows m, cols k): element (i, kk) is
// data[i*ld + kk] when !trans, data[kk*ld + i] when trans. For B (rows k, cols n):
// element (kk, j) is data[kk*ld + j] when !trans, data[j*ld + kk] when trans.
struct GemmOperand {
  const void* data;
  DType dtype;
  int64_t ld;
  bool trans;
};

struct GemmTerm {
  GemmOperand a;
  GemmOperand b;
  int64_t k;
  float alpha;
};

void gemm(int64_t m, int64_t n, const GemmTerm* terms, int nterms, float beta, float* c, int64_t ldc,
          const float* bias = nullptr);

// Convenience for one term.
inline void gemm(int64_t m, int64_t n, int64_t k, float alpha, GemmOperand a, GemmOperand b, float beta, float* c,
                 int64_t ldc, const float* bias = nullptr) {
  GemmTerm t{a, b, k, alpha};
  gemm(m, n, &t, 1, beta, c, ldc, bias);
}

// Small products on the calling thread, from operands packed once and reused: for code
// that already runs inside a pool task (CPU attention packs its Q block once for every
// key tile, and each K and V tile once for all the query heads that share it). The
// general gemm() packs both operands on every call and splits the work over the pool,
// which for a 64 x 64 x 64 tile costs about as much as the product. f32 operands only.
class GemmPacked {
 public:
  GemmPacked() = default;
  ~GemmPacked();
  GemmPacked(const GemmPacked&) = delete;
  GemmPacked& operator=(const GemmPacked&) = delete;

  // As the left operand: alpha · op(a), m x k.
  void pack_a(int64_t m, int64_t k, GemmOperand a, float alpha = 1.0f);
  // As the right operand: op(b), k x n.
  void pack_b(int64_t k, int64_t n, GemmOperand b);

 private:
  friend void gemm_packed(const GemmPacked& a, const GemmPacked& b, float beta, float* c, int64_t ldc);
  void pack(bool left, int64_t outer, int64_t k, GemmOperand op, float alpha);
  float* reserve(size_t floats);
  float* data_ = nullptr;
  size_t bytes_ = 0;
  int64_t outer_ = 0, k_ = 0;     // m (left) or n (right), and k
  const void* kernel_ = nullptr;  // the micro-kernel it was packed for
  bool left_ = false;
};

// C (m x n) = beta·C + A·B for A packed with pack_a and B with pack_b (the same k); beta == 0
// never reads C. Runs on the calling thread.
void gemm_packed(const GemmPacked& a, const GemmPacked& b, float beta, float* c, int64_t ldc);

}  // namespace cpu
}  // namespace instill
