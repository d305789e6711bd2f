// rmsnorm: y = x · rstd · w,  rstd = 1 / sqrt(mean(x²) + eps), over the last dimension (C).
//
// Forward   y (N, C) written (=); rstd (N) saved for backward.
// Backward  with g = w·dy (per row):
//             dx = rstd·g − x · rstd³ · mean(g·x)
//             dw += Σ_rows dy · x · rstd                      parameter gradients use +=
//           dx is written (=), or added to (+=) when accumulate_dx is set, so the
//           residual stream's gradient is summed in place. dx may alias dy (each row
//           is read completely before it is written).
// Row sums are accumulated in double on the CPU (in f32, by a block tree, on CUDA). Everything
// is f32, except that the forward's y may
// be bf16 (the f32 result rounded once: the model's norm outputs, which only feed bf16
// products, with bf16 activations on). Qwen3's per-head q/k norm is this op over (N·H, D).
#pragma once

#include "runtime/tensor.h"

namespace instill {

struct RmsnormForwardArgs {
  const Tensor* x;  // (N, C)
  const Tensor* w;  // (C)
  float eps;
  Tensor* y;        // (N, C) out (f32, may alias x; or bf16)
  Tensor* rstd;     // (N) out
  // Or, with y null: y rounded once to bf16 into the first C columns of this bf16 (N, ld) tensor, ld >= C (its
  // other columns untouched): a lora_group's packed x (ops/lora_group.h, x_packed), written where its products
  // read it instead of copied there.
  Tensor* y_packed = nullptr;
};

struct RmsnormBackwardArgs {
  const Tensor* dy;    // (N, C)
  const Tensor* x;     // (N, C) the forward's input
  const Tensor* w;     // (C)
  const Tensor* rstd;  // (N) from forward
  Tensor* dx;          // (N, C) out
  bool accumulate_dx;  // dx += instead of =
  Tensor* dw;          // (C) +=, or null (frozen norm)
  // Or null: also dx's final values rounded once to bf16 into the first C columns of this bf16 (N, ld) tensor,
  // ld >= C (its other columns untouched): o_proj's and down_proj's packed dy (ops/lora_linear.h, dy_packed), the
  // residual stream's gradient written where their backward reads it instead of packed there.
  Tensor* dx_packed = nullptr;
};

void rmsnorm_forward(const RmsnormForwardArgs& args);
void rmsnorm_backward(const RmsnormBackwardArgs& args);

}  // namespace instill
