#include "cpu/ops.h"

namespace instill {
namespace cpu {

const Backend& backend() {
  static const Backend b = {
      "cpu",
      Device::CPU,
      &cpu::matmul,
      &cpu::lora_linear_forward,
      &cpu::lora_linear_backward,
      &cpu::masked_cross_entropy,
      &cpu::linear_cross_entropy,
  };
  return b;
}

}  // namespace cpu
}  // namespace instill
