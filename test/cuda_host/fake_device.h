// What the checks share with the fake device (fake_device.cpp): bf16 rounding as the GPU does it (round to
// nearest even), on host floats.
#pragma once

namespace instill {
namespace cuda {
namespace fake {

float bf16_round(float v);

}  // namespace fake
}  // namespace cuda
}  // namespace instill
