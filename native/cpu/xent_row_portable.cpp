// Cross-entropy row, 4-float vectors (see xent_row.h).
#include "cpu/xent_row.h"

#define INSTILL_VL 4
#define INSTILL_XENT_NAME xent_row_portable
#include "cpu/xent_row.inc"
