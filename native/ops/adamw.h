// adamw: one decoupled-weight-decay Adam step (torch.optim.AdamW semantics), fp32 state.
//
//   p ← p · (1 − lr·wd)
//   m ← β1·m + (1−β1)·g          v ← β2·v + (1−β2)·g²
//   p ← p − (lr / (1−β1^t)) · m / (sqrt(v) / sqrt(1−β2^t) + eps)
// with t = step (1 for the first step). Per-element arithmetic in double, stored f32.
// param, m, v are updated in place; grad is read only.
#pragma once

#include <cstdint>

#include "runtime/tensor.h"

namespace instill {

struct AdamwArgs {
  Tensor* param;        // (n) f32, in place
  const Tensor* grad;   // (n) f32
  Tensor* m;            // (n) f32, in place
  Tensor* v;            // (n) f32, in place
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;         // >= 1
};

void adamw_step(const AdamwArgs& args);

}  // namespace instill
