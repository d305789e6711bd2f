// The CPU backend's op implementations. Arguments arrive validated by the ops'
// front functions (native/ops/*.cpp): shapes, dtypes, devices and target ranges
// are already checked here.
#pragma once

#include "ops/backend.h"

namespace instill {
namespace cpu {

void matmul(const MatmulArgs& args);
void lora_linear_forward(const LoraLinearForwardArgs& args);
void lora_linear_backward(const LoraLinearBackwardArgs& args);
void lora_group_forward(const LoraGroupForwardArgs& args);
void lora_group_backward(const LoraGroupBackwardArgs& args);
CrossEntropyResult masked_cross_entropy(const MaskedCrossEntropyArgs& args);
CrossEntropyResult linear_cross_entropy(const LinearCrossEntropyArgs& args);

}  // namespace cpu
}  // namespace instill
