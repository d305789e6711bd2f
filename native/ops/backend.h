// A backend is a table of op implementations for one device (ggml's pattern).
//
// The model and the ops' front functions (native/ops/*.cpp, which validate
// arguments) call only this table. A null entry means the backend does not
// support that op: backend_supports() answers the question, and calling it is
// an E_UNSUPPORTED error, never a crash. Backends are registered in
// native/ops/backend.cpp, the only place that knows which ones were built.
#pragma once

#include "ops/cross_entropy.h"
#include "ops/lora_linear.h"
#include "ops/matmul.h"
#include "runtime/device.h"

namespace instill {

struct Backend {
  const char* name;
  Device device;
  void (*matmul)(const MatmulArgs&);
  void (*lora_linear_forward)(const LoraLinearForwardArgs&);
  void (*lora_linear_backward)(const LoraLinearBackwardArgs&);
  CrossEntropyResult (*masked_cross_entropy)(const MaskedCrossEntropyArgs&);
  CrossEntropyResult (*linear_cross_entropy)(const LinearCrossEntropyArgs&);
};

// The backend for a device; throws E_DEVICE if none was built for it.
const Backend& backend_for(Device device);

namespace cpu {
const Backend& backend();
}

}  // namespace instill
