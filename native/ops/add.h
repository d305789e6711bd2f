// add: the residual connection and a linear layer's bias.
//
//   add        out = a + b              (same shapes; out may alias a or b)
//   bias_add   y[n, :] += bias          (N, OUT) in place
// Their backward passes are the identity (add) and a column sum (bias, only needed
// for a trained bias, which the model does not have yet). Everything f32.
#pragma once

#include "runtime/tensor.h"

namespace instill {

struct AddArgs {
  const Tensor* a;  // any shape
  const Tensor* b;  // same shape
  Tensor* out;      // same shape, may alias a or b
};

struct BiasAddArgs {
  Tensor* y;             // (N, OUT) in place
  const Tensor* bias;    // (OUT)
};

void add(const AddArgs& args);
void bias_add(const BiasAddArgs& args);

}  // namespace instill
