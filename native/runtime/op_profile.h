// Where the time goes, op by op: a profile for people who tune a training step
// (runtime.setOpProfile(true), then runtime.opProfile()).
//
// Off by default; then an OpScope costs one relaxed atomic load. On, every op's
// front function (native/ops) times its backend call: host time on the CPU (ops
// there return when done), device time between two marks queued on the stream on
// a GPU (nothing waits for the GPU until the profile is read). An op called from
// inside another op counts once, in the outer one.
//
// A backend may also time the parts of an op (OpPart: its packs, products and
// kernels), reported as extra rows named "op/part" (for example
// "lora_linear_forward/pack x"). They are inside the op's own row, so a sum over
// ops skips the rows with a '/'.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/device.h"

namespace instill {

class OpScope {
 public:
  OpScope(const char* op, Device device);
  ~OpScope();
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  bool counted_ = false;      // this scope raised the nesting depth
  const char* op_ = nullptr;  // null: not timing (off, or inside another op)
  Device device_ = Device::CPU;
  double t0_ = 0;
  void* mark_ = nullptr;
};

// One part of the op running on this thread (inside an OpScope); timed like an op.
class OpPart {
 public:
  OpPart(const char* part, Device device);
  ~OpPart();
  OpPart(const OpPart&) = delete;
  OpPart& operator=(const OpPart&) = delete;

 private:
  std::string name_;  // empty: not timing
  Device device_ = Device::CPU;
  double t0_ = 0;
  void* mark_ = nullptr;
};

// Turns the profile on or off; either way it starts empty.
void set_op_profile(bool on);
bool op_profile_enabled();

struct OpProfileRow {
  std::string op;
  Device device;
  int64_t calls;
  double ms;
};

// Totals since the profile started or was last read, the largest first; waits for
// the devices' queued work to finish, then starts the profile over.
std::vector<OpProfileRow> take_op_profile();

}  // namespace instill
