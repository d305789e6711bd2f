// embedding: rows of a table gathered by token id.
//
// Forward   out[n, :] = w[ids[n], :]                 (N, C) f32, written (=)
// Backward  dw[ids[n], :] += dout[n, :]              parameter gradients use +=
// An id outside [0, V) is E_RANGE (checked before anything is written).
// dtypes: w f32 | bf16 | f16 (converted to f32 on the way out); ids i32; dw f32.
#pragma once

#include "runtime/tensor.h"

namespace instill {

// ids_host: the same ids on the host, when the caller has them (the model on a GPU): checked there instead
// of read back from the device (which waits for all queued GPU work).
struct EmbeddingForwardArgs {
  const Tensor* ids;  // (N) i32
  const Tensor* w;    // (V, C)
  Tensor* out;        // (N, C) f32 out
  const Tensor* ids_host = nullptr;
};

struct EmbeddingBackwardArgs {
  const Tensor* dout;  // (N, C) f32
  const Tensor* ids;   // (N) i32
  Tensor* dw;          // (V, C) f32, +=
  const Tensor* ids_host = nullptr;
};

void embedding_forward(const EmbeddingForwardArgs& args);
void embedding_backward(const EmbeddingBackwardArgs& args);

}  // namespace instill
