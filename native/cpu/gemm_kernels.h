// Register-blocked GEMM micro-kernels, one per instruction set.
//
// Each gemm_kernel_<isa>.cpp is compiled with that ISA's flags and includes only
// this header and <cstdint>: nothing inline or templated from a shared header
// may be instantiated there, or the linker could pick an AVX-512 copy for code
// that runs on any CPU. The driver (gemm.cpp, baseline flags) chooses a kernel
// from runtime/cpu_features at run time.
//
// A micro-kernel computes one MR x NR tile of C from packed panels:
//   a: kc x MR, k-major (a[k*MR + i]);  b: kc x NR, k-major (b[k*NR + j]);
//   acc = sum_k a[k][i] * b[k][j]  (fp32, FMA where the ISA has it)
// and writes only the top-left m x n corner (m <= MR, n <= NR) of C:
//   C = base + acc + bias[j]  where base = C if !first, beta*C if first and beta != 0,
//   and 0 if first and beta == 0 (C is then never read: it may hold NaN).
#pragma once

#include <cstdint>

namespace instill {
namespace cpu {

struct GemmEpilogue {
  int32_t first;       // first K block of this tile
  float beta;          // scales C on the first block
  const float* bias;   // per column, offset to the tile; given only on the last K block, else null
  int64_t a_pairs_ld;  // pair kernels: A's rows lie this many pairs apart (bf16 A read in place); 0: packed
};

using GemmMicroKernel = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int m, int n,
                                 const GemmEpilogue* ep);

// Packs `width` (a multiple of 8) consecutive source rows, each read along k for
// kc elements (row-major, stride ld, dtype 0 f32 | 1 bf16 | 2 f16), transposed into
// dst[k*width + r] * alpha: op(A) = A into MR slivers, op(B) = Wᵀ into NR slivers.
using GemmPackRows = void (*)(const void* src, int32_t dtype, int64_t ld, int64_t kc, float alpha, int width,
                              float* dst);

// Pair kernels (AVX512-BF16) take panels of bf16 pairs along k instead of floats:
//   a: MR rows of ceil(kc/2) pairs, row-major (a[i*P + kp] = A(i, 2kp), A(i, 2kp+1), P = ceil(kc/2)):
//      a row of A is already pairs along k, so packing A only converts, never transposes,
//   b: ceil(kc/2) x NR pairs (b[kp*NR + j]), the odd tail padded with zeros,
// and compute acc += a_lo*b_lo + a_hi*b_hi (vdpbf16ps) in f32. Both operands are
// rounded to bf16 (nearest even) while packing. pack_pairs writes op(src)'s
// elements x in [x0, x0+nx) (columns of B) and k in [k0, k0+kc) into dst at k
// offset koff, in the b layout with NR = width; pack_pairs_rows writes rows of A
// in the a layout with `width` = 2P bf16 per row. `x_major` means element (x, k)
// is src[x*ld + k], else src[k*ld + x]. Every element in range is written; the
// caller zero-fills the rest (x past the edge, the half pair after an odd kc).
using GemmPackPairs = void (*)(const void* src, int32_t dtype, int64_t ld, int32_t x_major, float alpha, int64_t x0,
                               int64_t nx, int64_t k0, int64_t kc, int64_t koff, int width, uint16_t* dst);

// Narrow kernels: C (m x n) = op(A) (m x kdim) · B (kdim x n) for n <= 2*VL (LoRA's
// rank-r products: x·Aᵀ, dy·B, dyᵀ·u, and gᵀ·x transposed), f32 only. op(A) is read
// where it lies, never packed: element (i, k) at a[i*lda + k], or a[k*lda + i] when
// a_trans. b is packed k-major with rows of w = VL (n <= VL) or 2*VL floats, zero-
// padded past n. Element (i, j) of C is written at c[i*ldc + j], or c[j*ldc + i]
// when c_trans; C = beta*C + product, and beta == 0 never reads C. Every element's
// sum runs over k in order, so the result does not depend on how rows are split.
using GemmNarrowKernel = void (*)(int64_t kdim, const float* a, int64_t lda, int32_t a_trans, const float* b, float* c,
                                  int64_t ldc, int32_t c_trans, int64_t m, int n, float beta);

struct GemmKernelInfo {
  int mr;
  int nr;
  int kc;  // K block (elements): an MR x kc A sliver stays in L1 while the B slivers of a task stream from L2
  GemmMicroKernel run;
  GemmPackRows pack_rows;    // null: the driver's portable packing
  GemmPackPairs pack_pairs;       // non-null: a pair kernel (see above); packs B
  GemmPackPairs pack_pairs_rows;  // the pair kernel's A packing
  int narrow_vl;                  // floats per vector of the narrow kernel (0: none)
  GemmNarrowKernel narrow;
};

extern const GemmKernelInfo gemm_kernel_portable;
#if defined(__x86_64__)
extern const GemmKernelInfo gemm_kernel_avx2;
extern const GemmKernelInfo gemm_kernel_avx512;
extern const GemmKernelInfo gemm_kernel_avx512bf16;
#endif

}  // namespace cpu
}  // namespace instill
