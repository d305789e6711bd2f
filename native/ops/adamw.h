// The optimizer's ops.
//
// adamw: one decoupled-weight-decay Adam step (torch.optim.AdamW semantics), fp32 state, over a
// list of parameters that share the hyperparameters (one call per optimizer step: a backend
// may run the whole list as one launch; the GPU did 224 launches a step before).
//
//   g ← f32(g · grad_scale)       (only when grad_scale != 1: gradient clipping, as if the
//                                  gradient had been scaled in place and stored first)
//   p ← p · (1 − lr·wd)
//   m ← β1·m + (1−β1)·g          v ← β2·v + (1−β2)·g²
//   p ← p − (lr / (1−β1^t)) · m / (sqrt(v) / sqrt(1−β2^t) + eps)
// with t = step (1 for the first step). Per-element arithmetic in double, stored f32.
// param, m, v are updated in place; grad is read only.
//
// sum_squares: Σ x² over every element of a list of f32 tensors on one device (a global
// gradient norm), accumulated in double in a fixed order: chunks of kSumSquaresChunk
// elements, each summed alone, then the chunks' sums in order. The result does not
// depend on the thread count; the order inside a chunk is the device's own.
#pragma once

#include <cstdint>

#include "runtime/tensor.h"

namespace instill {

struct AdamwTensors {
  Tensor* param;        // (n) f32, in place
  const Tensor* grad;   // (n) f32
  Tensor* m;            // (n) f32, in place
  Tensor* v;            // (n) f32, in place
};

struct AdamwArgs {
  const AdamwTensors* tensors;  // one device; distinct params; empty tensors allowed
  int64_t count;                // >= 1
  double lr, beta1, beta2, eps, weight_decay;
  int64_t step;         // >= 1
  double grad_scale = 1.0;  // finite, > 0
};

void adamw_step(const AdamwArgs& args);

constexpr int64_t kSumSquaresChunk = 65536;

struct SumSquaresArgs {
  const Tensor* const* tensors;  // f32, one device; empty tensors allowed
  int64_t count;                 // >= 1
};

double sum_squares(const SumSquaresArgs& args);

}  // namespace instill
