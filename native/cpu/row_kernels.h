// Elementwise and row kernels of the model's CPU ops, vectorised per ISA
// (row_kernels_<isa>.cpp, written once in row_kernels.inc with vector extensions;
// see gemm_kernels.h for why those files include nothing inline from shared
// headers). exp is a Cephes-style polynomial (about 2 ulp) everywhere.
#pragma once

#include <cstdint>

namespace instill {
namespace cpu {

// One row of the masked cross-entropy:
//   returns logsumexp(in) - in[target]                       (as double)
//   out (when not null, may alias in) = (softmax(in) - onehot(target)) * inv_norm
// The row max is subtracted first (exact for logits of magnitude 1e4); the sum of
// exponentials is kept in f32 per vector lane and reduced in double.
using XentRowFn = double (*)(const float* in, float* out, int64_t v, int32_t target, double inv_norm);

struct RowKernels {
  XentRowFn xent;
  //   out[j] = exp(in[j] - shift) for j in [0, n), returns their sum (f32), for a
  //   softmax row whose shift is its max or its log-sum-exp (in[j] - shift <= ~0;
  //   below -87 gives 0); the same polynomial. out may alias in. (Attention.)
  float (*exp)(const float* in, float* out, int64_t n, float shift);
  // max of in[0, n), n >= 1
  float (*max)(const float* in, int64_t n);
  // SwiGLU (ops/swiglu.h) over n elements: out = silu(g)·u; and its backward,
  // dg = d·u·σ(g)·(1 + g·(1 − σ(g))), du = d·silu(g). σ(g) from exp(−|g|), so no
  // exponential overflows.
  void (*swiglu)(const float* g, const float* u, float* out, int64_t n);
  void (*swiglu_backward)(const float* d, const float* g, const float* u, float* dg, float* du, int64_t n);
};

extern const RowKernels row_kernels_portable;
#if defined(__x86_64__)
extern const RowKernels row_kernels_avx2;
extern const RowKernels row_kernels_avx512;
#endif

// The row kernels of the active ISA.
const RowKernels& row_kernels_for_active_isa();

}  // namespace cpu
}  // namespace instill
