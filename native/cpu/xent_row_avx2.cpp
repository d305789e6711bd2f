// Cross-entropy row, 8-float vectors (see xent_row.h).
#include "cpu/xent_row.h"

#define INSTILL_VL 8
#define INSTILL_XENT_NAME xent_row_avx2
#include "cpu/xent_row.inc"
