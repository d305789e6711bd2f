// swiglu: the gated MLP activation, out = silu(gate) · up, silu(g) = g · σ(g).
//
// Backward  dgate = dout · up · σ(g) · (1 + g·(1 − σ(g)))     dup = dout · silu(g)
// Outputs are written (=). Everything f32. σ is evaluated as 1/(1+exp(−g)),
// which is exact to f32 rounding for |g| up to f32's range (exp overflow gives σ = 0).
#pragma once

#include "runtime/tensor.h"

namespace instill {

struct SwigluForwardArgs {
  const Tensor* gate;  // (N, F)
  const Tensor* up;    // (N, F)
  Tensor* out;         // (N, F) out
};

struct SwigluBackwardArgs {
  const Tensor* dout;  // (N, F)
  const Tensor* gate;  // (N, F)
  const Tensor* up;    // (N, F)
  Tensor* dgate;       // (N, F) out
  Tensor* dup;         // (N, F) out
};

void swiglu_forward(const SwigluForwardArgs& args);
void swiglu_backward(const SwigluBackwardArgs& args);

}  // namespace instill
