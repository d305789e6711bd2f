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
// Arithmetic follows the stored dtypes, as the CPU backend's does (it rounds to
// bf16 only where an operand is bf16):
// - some operand bf16 or f16 (frozen weights of a bf16 model, packed buffers):
//   operands rounded to bf16, products accumulated in f32 on the tensor cores
//   (cuBLASLt, else WMMA 16×16×16): bf16 tolerance (~1e-2 relative worst case).
// - every operand f32 (an f32 model; LoRA's own products when their inputs are
//   f32): TF32 tensor cores through cuBLASLt (10-bit mantissa, ~8x less rounding
//   error than bf16), else an f32 CUDA-core kernel. all_f32() says which.
// beta = 0 never reads C (it may hold NaN poison). bias (N) f32 or null. C may be read from another
// tensor than the one written (c_in: y = residual + product).
// C is f32, or bf16 (c16 instead of c: the f32 result rounded once; cuBLASLt writes it directly
// when beta = 0 and there is no bias, else the product goes through an f32 scratch).
#pragma once

#include <cmath>
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
  __nv_bfloat16* c16 = nullptr;  // or this bf16 C (c null)
  int64_t ldc = 0;
  // With an f32 c: the C that beta scales is read from here (same row stride) and the result written to c,
  // D = α·AB + β·C_in + bias: a residual added inside the product (may equal c; null: c itself).
  const float* c_in = nullptr;
};

void gemm(const GemmArgs& g);

// Every operand the product reads (both K segments when K[1] > 0) is f32.
inline bool all_f32(const GemmArgs& g) {
  for (int s = 0; s < (g.K[1] > 0 ? 2 : 1); ++s)
    if (g.a[s].e != Elem::F32 || g.b[s].e != Elem::F32) return false;
  return true;
}

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

// Several small f32 blocks, each rounded into its own bf16 destination (pack_bf16 with scale 1), in ONE launch:
// for the per-call factors (lora_group's B and A blocks of its kept matrix: a few thousand elements each, where the
// launches cost more than the work). At most kMaxPackJobs; a job with rows or cols 0 does nothing.
// pack_f32_jobs: the same into f32 destinations (exact copies: lora_group's per-member blocks of a product).
template <typename D>
struct PackJobOf {
  const float* src;
  int64_t lds, rows, cols;
  D* dst;
  int64_t ldd;
};
using PackJob = PackJobOf<__nv_bfloat16>;
using PackJobF32 = PackJobOf<float>;
constexpr int kMaxPackJobs = 8;
void pack_bf16_jobs(const PackJob* jobs, int n);
// Any number of such blocks in ONE launch (lora_pack_factors: every B and A block of a pass, ~224 for a 1B model),
// the list read from device memory: uploaded only when it differs from the last call's (a model's list stays the
// same from step to step, so the upload, which may wait for the queued work, happens once).
void pack_bf16_table(const PackJob* jobs, int64_t n);
void pack_f32_jobs(const PackJobF32* jobs, int n);

// The same passes into an f32 destination (the stacked operands of all-f32 products).
void pack_f32(const void* src, Elem e, int64_t lds, float scale, int64_t rows, int64_t cols, float* dst, int64_t ldd);
void gather_f32(const void* src, Elem e, int64_t lds, float scale, const int32_t* row_index, int64_t rows,
                int64_t cols, float* dst, int64_t ldd);

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// bf16 activations on the f32 paths (attention's f32 kernels, lora_dropout): an f32 copy of a bf16 tensor,
// and an f32 tensor rounded into a bf16 tensor of its shape (packs over its last dimension; bf16_pack.cu).
Tensor widened(const Tensor& bf16);
void narrow_into(const Tensor& f32, const Tensor& bf16);

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
// A matrix of element type e stored with row stride ld (a view into a packed buffer, or some of a tensor's
// columns), and the same for bf16.
inline GemmOperand strided_operand(const void* p, Elem e, int64_t ld, bool trans) {
  GemmOperand o;
  o.p = p;
  o.e = e;
  o.ld = ld;
  o.trans = trans;
  return o;
}
inline GemmOperand bf16_operand(const __nv_bfloat16* p, int64_t ld, bool trans) { return strided_operand(p, Elem::BF16, ld, trans); }

// A bf16 tensor's data.
inline __nv_bfloat16* bf16_ptr(const Tensor& t) { return t.data_as<__nv_bfloat16>(); }

// The product's C: an f32 or a bf16 output tensor, with row stride ldc.
inline void set_c(GemmArgs& g, Tensor& t, int64_t ldc) {
  if (t.dtype() == DType::BF16) g.c16 = bf16_ptr(t);
  else g.c = t.data_as<float>();
  g.ldc = ldc;
}

// Whether cuBLASLt's path (cublaslt.cu's plan_side) reads one side of a product (its operands s[0], s[1]) as it
// lies: a single unscaled segment of the product's type (bf16, or f32 for an all-f32 product). Else it packs the
// side into a fresh buffer first, one launch more (the fake device counts those: test/cuda_host).
inline bool side_as_is(const GemmArgs& g, const GemmOperand* s) {
  return g.K[1] == 0 && s[0].e == (all_f32(g) ? Elem::F32 : Elem::BF16) && s[0].scale == 1.f;
}

// INSTILL_CUDA_NEXT `fewer_packs`: may a product read bf16(s·v), rounded once, where it would read bf16(v) and scale
// its sum by s? Exactly when s is a power of two: scaling by 2^k commutes with rounding (bf16 has f32's exponent
// range), and so does every f32 product and partial sum of the product, so Σ bf16(s·v)·w = s·Σ bf16(v)·w in the
// same order (away from f32's subnormals, which LoRA's g and u do not reach). (LoRA's s = alpha / r, or alpha / √r: 1, 2, 4, 0.5 in the usual settings.)
inline bool scales_exactly(float s) {
  int e = 0;
  return std::isfinite(s) && std::fabs(std::frexp(s, &e)) == 0.5f;
}

// A single-segment product C (M, N) = op(A)·op(B), alpha 1, beta 0, no bias.
inline GemmArgs product(int64_t M, int64_t N, int64_t K, GemmOperand a, GemmOperand b, float* c, int64_t ldc) {
  GemmArgs g;
  g.M = M; g.N = N; g.K[0] = K;
  g.a[0] = a; g.b[0] = b;
  g.c = c; g.ldc = ldc;
  return g;
}

// The LoRA output as one product, y (N, OUT) = x·Wᵀ + s·u·Bᵀ + bias: the low-rank term is a
// second K segment of y's own tile (lora_linear with f32 weights, lora_dropout).
inline GemmArgs lora_output_product(const Tensor& x, const Tensor& w, const Tensor& u, const Tensor& b, float scale,
                                    const Tensor* bias, Tensor& y) {
  GemmArgs g;
  g.M = x.dim(0); g.N = w.dim(0); g.K[0] = x.dim(1); g.K[1] = u.dim(1);
  g.a[0] = operand(x, false);
  g.a[1] = operand(u, false, scale);
  g.b[0] = operand(w, true);
  g.b[1] = operand(b, true);
  g.bias = bias ? bias->data_as<float>() : nullptr;
  g.c = y.data_as<float>(); g.ldc = w.dim(0);
  return g;
}

// LoRA's weight gradients from g = dy·B (N, R): dA (R, IN) = s·gᵀ·x and dB (OUT, R) = s·dyᵀ·u,
// = or += by accumulate (lora_linear with f32 weights; lora_dropout, with x the dropped input).
inline void lora_weight_grads(const Tensor& g, const Tensor& x, const Tensor& dy, const Tensor& u, float scale,
                              bool accumulate, Tensor& da, Tensor& db) {
  const int64_t N = x.dim(0), IN = x.dim(1), OUT = dy.dim(1), R = g.dim(1);
  GemmArgs a = product(R, IN, N, operand(g, true), operand(x, false), da.data_as<float>(), IN);
  GemmArgs b = product(OUT, R, N, operand(dy, true), operand(u, false), db.data_as<float>(), R);
  for (GemmArgs* p : {&a, &b}) {
    p->alpha = scale;
    p->beta = accumulate ? 1.f : 0.f;
    gemm(*p);
  }
}

}  // namespace cuda
}  // namespace instill
