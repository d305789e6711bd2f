// Cross-entropy row, 16-float vectors (see xent_row.h).
#include "cpu/xent_row.h"

#define INSTILL_VL 16
#define INSTILL_XENT_NAME xent_row_avx512
#include "cpu/xent_row.inc"
