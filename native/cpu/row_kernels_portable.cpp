// Row kernels, 4-float vectors (see row_kernels.h).
#include "cpu/row_kernels.h"

#define INSTILL_VL 4
#define INSTILL_ROW_KERNELS_NAME row_kernels_portable
#include "cpu/row_kernels.inc"
