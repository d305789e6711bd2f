// lora_pack_factors: the bf16 copies of LoRA's factors that a backend's forward products read from the caller's kept
// matrices, for many LoRA ops at once, before their forwards:
//   a lora_linear's B into columns IN..IN+R of its kept [W | B] (ops/lora_linear.h's wb), and, with stack_a, A into
//   the rows below a bf16 W that the backend keeps for it (where its lora_linear_forward would put it);
//   a lora_group's B and A blocks into its kept matrix (ops/lora_group.h's kept).
// Each op's forward is then called with factors_packed and writes none of them itself. Why: on a GPU each forward
// otherwise rounds its factors in one or two small launches of its own (~96 a 1B step, ~0.46 ms of run 16's
// 31.95 ms; bench/RESULTS.md), where one launch does all of them. The factors must not change between this call
// and those forwards (the model calls it at the start of a pass; the optimizer runs after the pass).
//
// Every entry must have its kept matrix with W in it already (wb_has_w / kept_has_w: an earlier forward copied
// W in), bf16/f16 weights, f32 factors. The CPU backend keeps no such copies and has no entry (E_UNSUPPORTED): the
// model calls this on a GPU only (INSTILL_CUDA_NEXT=factor_pack).
#pragma once

#include <vector>

#include "ops/lora_group.h"
#include "ops/lora_linear.h"

namespace instill {

struct LoraPackFactorsArgs {
  // The forward arguments each op will be called with. Read: w, a, b, wb (with wb_has_w) and stack_a of a linear;
  // m, w, a, b and kept (with kept_has_w) of a group. The rest (x, y, u, ...) may be null: they are not read.
  std::vector<const LoraLinearForwardArgs*> linears;
  std::vector<const LoraGroupForwardArgs*> groups;
};

// Validate (E_ARG / E_SHAPE / E_DTYPE naming the entry and argument), then run on the first entry's device;
// nothing to do for no entries.
void lora_pack_factors(const LoraPackFactorsArgs& args);

}  // namespace instill
