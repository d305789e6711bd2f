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
// is src[x*ld + k], else src[k*ld + x]. The caller zero-fills dst first.
using GemmPackPairs = void (*)(const void* src, int32_t dtype, int64_t ld, int32_t x_major, float alpha, int64_t x0,
                               int64_t nx, int64_t k0, int64_t kc, int64_t koff, int width, uint16_t* dst);

struct GemmKernelInfo {
  int mr;
  int nr;
  int kc;  // K block (elements): an MR x kc A sliver stays in L1 while the B slivers of a task stream from L2
  GemmMicroKernel run;
  GemmPackRows pack_rows;    // null: the driver's portable packing
  GemmPackPairs pack_pairs;       // non-null: a pair kernel (see above); packs B
  GemmPackPairs pack_pairs_rows;  // the pair kernel's A packing
};

extern const GemmKernelInfo gemm_kernel_portable;
#if defined(__x86_64__)
extern const GemmKernelInfo gemm_kernel_avx2;
extern const GemmKernelInfo gemm_kernel_avx512;
extern const GemmKernelInfo gemm_kernel_avx512bf16;
#endif

}  // namespace cpu
}  // namespace instill
