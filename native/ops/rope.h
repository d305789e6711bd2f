// rope: rotary position embedding, Hugging Face "rotate half" layout.
//
// For token n at position p = positions[n], every head h and i < D/2, with
// θ = p · inv_freq[i] (f32 product, as HF computes it) and c = cos θ, s = sin θ:
//   Forward   y[i] = x[i]·c − x[i+D/2]·s        y[i+D/2] = x[i+D/2]·c + x[i]·s
//   Backward  the transposed rotation (θ → −θ) applied to dy.
// inv_freq carries any RoPE scaling (llama3, linear) already: the caller computes it.
// Positions restart per packed example, so rotation is always relative to the example.
// out may alias x (in place). A negative position is E_RANGE. bf16 x / out (the model's bf16
// activations): the same f32 math on the widened x, each output rounded once.
#pragma once

#include "runtime/tensor.h"

namespace instill {

struct RopeArgs {
  const Tensor* x;          // (N, H, D) f32 or bf16 (dy for backward)
  const Tensor* positions;  // (N) i32
  const Tensor* inv_freq;   // (D/2) f32
  Tensor* out;              // (N, H, D) out, x's dtype (dx for backward), may alias x
  // The same positions on the host, when the caller has them (the model on a GPU): checked there instead of
  // read back from the device (a read back waits for all queued GPU work: the model calls rope 4 times a layer).
  const Tensor* positions_host = nullptr;
  // Or null: a second tensor (N, H2, D) of x's dtype, rotated with the same positions into out2 (its shape; may
  // alias x2) — the model's k beside its q, so that a backend can make each token's angles once for both, in one
  // pass (CUDA with INSTILL_CUDA_NEXT=rope_qk). The results are those of two calls. Both or neither.
  const Tensor* x2 = nullptr;
  Tensor* out2 = nullptr;
  // Or, instead of out (and out2; give them null): a bf16 (N, ld) buffer receiving out in its columns
  // out_col..out_col + H·D (and out2 in out2_col..out2_col + H2·D), its other columns untouched, with bf16 x: the
  // q/k/v group's packed dy (ops/lora_group.h's dy_packed), where the model's backward rotates dq and dk into
  // (INSTILL_CUDA_NEXT=dqkv_pack). The values are those written to out (and out2).
  Tensor* out_packed = nullptr;
  int64_t out_col = 0, out2_col = 0;
};

// The two single-tensor calls that a call with x2 stands for (what a backend without a one-pass kernel runs).
inline void rope_pair_parts(const RopeArgs& p, RopeArgs& first, RopeArgs& second) {
  first = second = p;
  first.x2 = second.x2 = nullptr;
  first.out2 = second.out2 = nullptr;
  second.x = p.x2;
  second.out = p.out2;
  second.out_col = p.out2_col;
}

void rope_forward(const RopeArgs& args);
void rope_backward(const RopeArgs& args);

}  // namespace instill
