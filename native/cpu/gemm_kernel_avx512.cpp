// AVX-512F micro-kernel (compiled with -mavx512f and friends): 8 x 32 tile, 16 zmm accumulators.
#include "cpu/gemm_kernels.h"
#include "cpu/gemm_pack.inc"

#define INSTILL_MR 8
#define INSTILL_NR 32
#define INSTILL_VL 16
#define INSTILL_KC 640
#define INSTILL_NARROW_MR1 12  // rows per block of the narrow kernel, n <= VL
#define INSTILL_NARROW_MR2 12  // n <= 2 VL
#define INSTILL_KERNEL_NAME gemm_kernel_avx512
#define INSTILL_PACK_ROWS &pack_a_rows
#include "cpu/gemm_microkernel.inc"
