// AVX-512F micro-kernel (compiled with -mavx512f and friends): 8 x 32 tile, 16 zmm accumulators.
#include "cpu/gemm_kernels.h"

#define INSTILL_MR 8
#define INSTILL_NR 32
#define INSTILL_VL 16
#define INSTILL_KERNEL_NAME gemm_kernel_avx512
#include "cpu/gemm_microkernel.inc"
