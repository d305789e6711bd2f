// AVX2 + FMA micro-kernel (compiled with -mavx2 -mfma): 6 x 16 tile, 12 ymm accumulators.
#include "cpu/gemm_kernels.h"

#define INSTILL_MR 6
#define INSTILL_NR 16
#define INSTILL_VL 8
#define INSTILL_KERNEL_NAME gemm_kernel_avx2
#include "cpu/gemm_microkernel.inc"
