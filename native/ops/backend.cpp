#include "ops/backend.h"

#include "runtime/error.h"

namespace instill {

const Backend& backend_for(Device device) {
  switch (device) {
    case Device::CPU: return cpu::backend();
    case Device::CUDA: break;
  }
  fail(ErrorCode::Device, "no backend for device '", device_name(device), "' in this build of instill");
}

}  // namespace instill
