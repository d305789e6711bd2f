#include "cpu/row_kernels.h"

#include "runtime/cpu_features.h"

namespace instill {
namespace cpu {

const RowKernels& row_kernels_for_active_isa() {
#if defined(__x86_64__)
  switch (active_isa()) {
    case Isa::Avx512:
    case Isa::Avx512Bf16: return row_kernels_avx512;
    case Isa::Avx2: return row_kernels_avx2;
    case Isa::Portable: break;
  }
#endif
  return row_kernels_portable;
}

}  // namespace cpu
}  // namespace instill
