// One row of the masked cross-entropy, vectorised per ISA (xent_row_<isa>.cpp,
// written once in xent_row.inc with vector extensions; see gemm_kernels.h for
// why those files include nothing inline from shared headers).
//
//   returns logsumexp(in) - in[target]                       (as double)
//   out (when not null, may alias in) = (softmax(in) - onehot(target)) * inv_norm
//
// The row max is subtracted first (exact for logits of magnitude 1e4); exp is a
// Cephes-style polynomial (about 2 ulp); the sum of exponentials is kept in f32
// per vector lane and reduced in double.
#pragma once

#include <cstdint>

namespace instill {
namespace cpu {

using XentRowFn = double (*)(const float* in, float* out, int64_t v, int32_t target, double inv_norm);

extern const XentRowFn xent_row_portable;
#if defined(__x86_64__)
extern const XentRowFn xent_row_avx2;
extern const XentRowFn xent_row_avx512;
#endif

// The function for the active ISA.
XentRowFn xent_row_for_active_isa();

}  // namespace cpu
}  // namespace instill
