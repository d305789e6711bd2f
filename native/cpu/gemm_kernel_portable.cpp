// Portable micro-kernel: 4-float vectors (SSE2 on x86-64, NEON on arm64), 4 x 16 tile.
#include "cpu/gemm_kernels.h"

#define INSTILL_MR 4
#define INSTILL_NR 16
#define INSTILL_VL 4
#define INSTILL_KC 256
#define INSTILL_NARROW_MR1 8  // rows per block of the narrow kernel, n <= VL
#define INSTILL_NARROW_MR2 6  // n <= 2 VL
#define INSTILL_KERNEL_NAME gemm_kernel_portable
#define INSTILL_PACK_ROWS nullptr
#include "cpu/gemm_microkernel.inc"
