// Row kernels, 16-float vectors (see row_kernels.h).
#include "cpu/row_kernels.h"

#define INSTILL_VL 16
#define INSTILL_ROW_KERNELS_NAME row_kernels_avx512
#include "cpu/row_kernels.inc"
