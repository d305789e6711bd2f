// Masked cross-entropy, alone (masked_cross_entropy) and fused with the LM head
// (linear_cross_entropy).
//
// Rows whose target equals ignore_index carry no loss and get a zero gradient.
// Over the `count` other rows:
//   loss     = sum_rows (logsumexp(logits_row) - logits_row[target]) / normalizer
//   dlogits  = (softmax(logits_row) - onehot(target)) / normalizer
// where normalizer = count by default (the mean), or a caller's denominator (the
// target-token count of a whole gradient-accumulation window). With count == 0
// the loss is 0 and every gradient is 0 (a sum over nothing), not NaN.
// logsumexp subtracts the row max first, so logits of magnitude 1e4 are exact to
// f32 rounding; row sums and the loss are accumulated in double.
//
// linear_cross_entropy computes logits = h·Wᵀ on the fly: ignored rows are
// dropped before the head, the rest go through in row chunks, and each chunk's
// softmax gradient is turned into dh (and dW when asked) at once. Peak extra
// memory is O(chunk·V + chunk·C), never O(N·V). Default chunk (CPU): as many rows
// as fit in kLinearCrossEntropyChunkBytes of logits, but at least
// kLinearCrossEntropyMinRows: both products of a chunk stream all of W, and below
// a few hundred rows the CPU GEMM spends its time packing W (SmolLM2's head, V =
// 49152: 170-row chunks ran at 115-150 GFLOP/s, 340-row chunks at 180-200, and a
// whole 4-layer training step took 3.15 s instead of 3.77 s).
//
// A target outside [0, V) other than ignore_index is E_RANGE.
#pragma once

#include <cstdint>

#include "runtime/tensor.h"

namespace instill {

struct CrossEntropyResult {
  double loss;
  int64_t count;  // rows whose target is not ignore_index
};

struct MaskedCrossEntropyArgs {
  const Tensor* logits;  // (N, V) f32
  const Tensor* targets; // (N) i32
  int32_t ignore_index;
  double normalizer;     // <= 0: use count
  Tensor* dlogits;       // (N, V) f32 out, or null
};

struct LinearCrossEntropyArgs {
  const Tensor* h;       // (N, C) f32
  const Tensor* w;       // (V, C) f32 | bf16 | f16, the LM head
  const Tensor* targets; // (N) i32
  int32_t ignore_index;
  double normalizer;     // <= 0: use count
  Tensor* dh;            // (N, C) f32 out (=), or null
  Tensor* dw;            // (V, C) f32 out, or null (frozen head)
  bool accumulate_dw;    // dw += instead of =
  int64_t chunk_rows;    // rows per chunk; 0: the default (above)
  // The same targets on the host, when the caller has them (the model on a GPU): checked and read there
  // instead of read back from the device (which waits for all queued GPU work).
  const Tensor* targets_host = nullptr;
};

constexpr int64_t kLinearCrossEntropyChunkBytes = 64ll << 20;
constexpr int64_t kLinearCrossEntropyMinRows = 256;

CrossEntropyResult masked_cross_entropy(const MaskedCrossEntropyArgs& args);
CrossEntropyResult linear_cross_entropy(const LinearCrossEntropyArgs& args);

}  // namespace instill
