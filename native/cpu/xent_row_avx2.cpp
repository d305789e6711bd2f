// Row kernels, 8-float vectors (see xent_row.h).
#include "cpu/xent_row.h"

#define INSTILL_VL 8
#define INSTILL_ROW_KERNELS_NAME row_kernels_avx2
#include "cpu/xent_row.inc"
