#include "ops/backend.h"

#include "runtime/error.h"

namespace instill {

#ifdef INSTILL_CUDA
namespace cuda {
const Backend& backend();
}
#endif

const Backend& backend_for(Device device) {
  switch (device) {
    case Device::CPU: return cpu::backend();
    case Device::CUDA:
#ifdef INSTILL_CUDA
      if (device_available(device)) return cuda::backend();
      fail(ErrorCode::Device, "device 'cuda' is not available: ", device_unavailable_reason(device));
#endif
      break;
  }
  fail(ErrorCode::Device, "no backend for device '", device_name(device), "' in this build of instill");
}

uint64_t side_work_mark(Device device) {
  const Backend& be = backend_for(device);
  return be.side_work_count ? be.side_work_count() : 0;
}

void join_side_work(Device device, uint64_t upto) {
  const Backend& be = backend_for(device);
  if (be.join_side_work) be.join_side_work(upto);
}

}  // namespace instill
