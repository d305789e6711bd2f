// A backend is a table of op implementations for one device (ggml's pattern).
//
// The model and the ops' front functions (native/ops/*.cpp, which validate
// arguments) call only this table. A null entry means the backend does not
// support that op: backend_supports() answers the question, and calling it is
// an E_UNSUPPORTED error, never a crash. Backends are registered in
// native/ops/backend.cpp, the only place that knows which ones were built.
#pragma once

#include <cstdint>

#include "ops/add.h"
#include "ops/adamw.h"
#include "ops/attention.h"
#include "ops/cross_entropy.h"
#include "ops/embedding.h"
#include "ops/lora_dropout.h"
#include "ops/lora_group.h"
#include "ops/lora_linear.h"
#include "ops/lora_pack.h"
#include "ops/matmul.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/swiglu.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/op_profile.h"

namespace instill {

struct Backend {
  const char* name;
  Device device;
  void (*matmul)(const MatmulArgs&);
  void (*lora_linear_forward)(const LoraLinearForwardArgs&);
  void (*lora_linear_backward)(const LoraLinearBackwardArgs&);
  CrossEntropyResult (*masked_cross_entropy)(const MaskedCrossEntropyArgs&);
  CrossEntropyResult (*linear_cross_entropy)(const LinearCrossEntropyArgs&);
  // The model's ops (native/model).
  void (*embedding_forward)(const EmbeddingForwardArgs&);
  void (*embedding_backward)(const EmbeddingBackwardArgs&);
  void (*rmsnorm_forward)(const RmsnormForwardArgs&);
  void (*rmsnorm_backward)(const RmsnormBackwardArgs&);
  void (*rope_forward)(const RopeArgs&);
  void (*rope_backward)(const RopeArgs&);
  void (*attention_forward)(const AttentionForwardArgs&);
  void (*attention_backward)(const AttentionBackwardArgs&);
  void (*attention_decode)(const AttentionDecodeArgs&);
  void (*swiglu_forward)(const SwigluForwardArgs&);
  void (*swiglu_backward)(const SwigluBackwardArgs&);
  void (*adamw_step)(const AdamwArgs&);
  double (*sum_squares)(const SumSquaresArgs&);
  void (*add)(const AddArgs&);
  void (*bias_add)(const BiasAddArgs&);
  void (*lora_dropout_forward)(const LoraDropoutForwardArgs&);
  void (*lora_dropout_backward)(const LoraDropoutBackwardArgs&);
  void (*lora_group_forward)(const LoraGroupForwardArgs&);
  void (*lora_group_backward)(const LoraGroupBackwardArgs&);
  void (*lora_pack_factors)(const LoraPackFactorsArgs&);  // null on the CPU (ops/lora_pack.h: no kept copies there)
  // What LoRA backwards given side_grads leave behind (ops/lora_linear.h): side_work_count() counts such calls (those
  // that left work and those that did not), and join_side_work(upto) makes the device's later work wait for the first
  // `upto` of them. Null where nothing is ever left behind (the CPU).
  uint64_t (*side_work_count)();
  void (*join_side_work)(uint64_t upto);
};

// The backend for a device; throws E_DEVICE if none was built for it.
const Backend& backend_for(Device device);

// Runs `device`'s backend entry for an op (the ops' front functions call it after validating):
// E_UNSUPPORTED naming the op when the backend has none, and timed under `op` by the op
// profiler (runtime/op_profile.h).
template <typename Entry, typename Args>
auto run_op(Device device, Entry Backend::*entry, const char* op, const Args& args) {
  const Backend& be = backend_for(device);
  if (!(be.*entry)) fail(ErrorCode::Unsupported, op, " is not implemented on ", be.name);
  const OpScope scope(op, be.device);
  return (be.*entry)(args);
}

namespace cpu {
const Backend& backend();
}

// Backend::side_work_count on `device`'s backend (0 where it has none): a mark for join_side_work.
uint64_t side_work_mark(Device device);
// Backend::join_side_work on `device`'s backend (nothing where it has none): the LoRA backwards given side_grads up to
// `upto` (side_work_mark() just after the last of them; by default every one so far) have written their dA and dB, and
// read their operands, for everything queued after this call.
void join_side_work(Device device, uint64_t upto = UINT64_MAX);

}  // namespace instill
