#include "cpu/xent_row.h"

#include "runtime/cpu_features.h"

namespace instill {
namespace cpu {

XentRowFn xent_row_for_active_isa() {
#if defined(__x86_64__)
  switch (active_isa()) {
    case Isa::Avx512:
    case Isa::Avx512Bf16: return xent_row_avx512;
    case Isa::Avx2: return xent_row_avx2;
    case Isa::Portable: break;
  }
#endif
  return xent_row_portable;
}

}  // namespace cpu
}  // namespace instill
