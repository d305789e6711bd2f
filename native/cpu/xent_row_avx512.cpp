// Row kernels, 16-float vectors (see xent_row.h).
#include "cpu/xent_row.h"

#define INSTILL_VL 16
#define INSTILL_ROW_KERNELS_NAME row_kernels_avx512
#include "cpu/xent_row.inc"
