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

struct GemmKernelInfo {
  int mr;
  int nr;
  GemmMicroKernel run;
};

extern const GemmKernelInfo gemm_kernel_portable;
#if defined(__x86_64__)
extern const GemmKernelInfo gemm_kernel_avx2;
extern const GemmKernelInfo gemm_kernel_avx512;
#endif

}  // namespace cpu
}  // namespace instill
