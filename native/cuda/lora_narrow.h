// LoRA's narrow products (one side the rank r) on the CUDA cores, for lora_linear's
// bf16 path when INSTILL_CUDA_NEXT names `narrow` (lora_narrow.cu says how and why).
// Internal to native/cuda. Both queue on the backend stream and are deterministic.
#pragma once

#include <cstdint>

#include "cuda/common.cuh"

namespace instill {
namespace cuda {

// out (N, R) f32 = alpha · X · F, X (N, K) bf16 with row stride ldx (rows 16-byte aligned: x aligned,
// ldx % 8 == 0), F(k, r) = f_trans ? f[r·ldf + k] : f[k·ldf + r] (f32). With out16, also
// out16[n·ld16 + r] = bf16(scale16 · out[n][r]) (the scaled copy a later product reads). With x32, X is
// read from there (f32, row stride ld32) and rounded to bf16, and the rounded X is written into x: the
// pass is also X's pack.
struct NarrowRowsArgs {
  __nv_bfloat16* x;
  int64_t ldx, N, K;
  const float* f;
  int64_t ldf;
  bool f_trans;
  int64_t R;
  float alpha;
  float* out;
  __nv_bfloat16* out16;  // or null
  int64_t ld16;
  float scale16;
  const float* x32 = nullptr;  // or the f32 source of X
  int64_t ld32 = 0;
};
void narrow_rows(const NarrowRowsArgs& a);

// out = alpha · Gᵀ·X + beta · out (beta 0: out not read), G (N, R) f32 contiguous, X (N, C) f32 | bf16 with
// row stride ldx; out (R, C) row-major, or with out_cr its transpose (C, R).
struct NarrowColsArgs {
  const float* g;
  int64_t N, R;
  const void* x;
  Elem xe;
  int64_t ldx, C;
  float alpha, beta;
  float* out;
  bool out_cr;
};
void narrow_cols(const NarrowColsArgs& a);

}  // namespace cuda
}  // namespace instill
