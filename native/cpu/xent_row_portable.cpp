// Row kernels, 4-float vectors (see xent_row.h).
#include "cpu/xent_row.h"

#define INSTILL_VL 4
#define INSTILL_ROW_KERNELS_NAME row_kernels_portable
#include "cpu/xent_row.inc"
