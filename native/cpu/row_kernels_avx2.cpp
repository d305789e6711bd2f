// Row kernels, 8-float vectors (see row_kernels.h).
#include "cpu/row_kernels.h"

#define INSTILL_VL 8
#define INSTILL_ROW_KERNELS_NAME row_kernels_avx2
#include "cpu/row_kernels.inc"
