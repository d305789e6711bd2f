// AVX2 + FMA micro-kernel (compiled with -mavx2 -mfma): 6 x 16 tile, 12 ymm accumulators.
#include "cpu/gemm_kernels.h"
#include "cpu/gemm_pack.inc"

#define INSTILL_MR 6
#define INSTILL_NR 16
#define INSTILL_VL 8
#define INSTILL_KC 256
#define INSTILL_NARROW_MR1 12  // rows per block of the narrow kernel, n <= VL
#define INSTILL_NARROW_MR2 6  // n <= 2 VL
#define INSTILL_KERNEL_NAME gemm_kernel_avx2
#define INSTILL_PACK_ROWS &pack_a_rows
#include "cpu/gemm_microkernel.inc"
