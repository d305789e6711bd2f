// swiglu: the gated MLP activation, out = silu(gate) · up, silu(g) = g · σ(g).
//
// Backward  dgate = dout · up · σ(g) · (1 + g·(1 − σ(g)))     dup = dout · silu(g)
// Outputs are written (=). Every tensor of a call f32, or every one bf16 (computed in f32, each
// output rounded once: the model's MLP activations on a GPU). σ(g) = 1/(1+exp(−g)) saturates to 0 or 1
// for large |g| and never gives NaN (the CPU evaluates it from exp(−|g|)).
#pragma once

#include "runtime/tensor.h"

namespace instill {

struct SwigluForwardArgs {
  const Tensor* gate;  // (N, F)
  const Tensor* up;    // (N, F)
  Tensor* out;         // (N, F) out
  // Or, with out null: one bf16 (N, ld) tensor, ld >= F, that gets out in its columns 0..F (rounded once to bf16;
  // its other columns untouched): down_proj's packed x (ops/lora_linear.h, x_packed), written where that product
  // reads it instead of copied there.
  Tensor* out_packed = nullptr;
};

struct SwigluBackwardArgs {
  const Tensor* dout;  // (N, F)
  const Tensor* gate;  // (N, F)
  const Tensor* up;    // (N, F)
  Tensor* dgate;       // (N, F) out
  Tensor* dup;         // (N, F) out
  // Or, with dgate and dup null: one bf16 (N, ld) tensor, ld >= 2F, that gets dgate in its columns 0..F and dup
  // in F..2F (each rounded once to bf16; its other columns untouched): lora_group's packed dy for gate and up
  // (ops/lora_group.h, dy_packed), written where that backward reads it instead of copied there.
  Tensor* dgu = nullptr;
};

void swiglu_forward(const SwigluForwardArgs& args);
void swiglu_backward(const SwigluBackwardArgs& args);

}  // namespace instill
