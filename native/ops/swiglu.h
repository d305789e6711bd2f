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
  // Or null. With out_packed: also s·u = s · out·Aᵀ into out_packed's columns F .. F + u_rows (down_proj's LoRA u,
  // written where its forward reads it, so that it makes none: ops/lora_linear.h's su_written, INSTILL_CUDA_NEXT
  // `swiglu_u`). A is rows u_row0 .. u_row0 + u_rows, columns 0 .. F, of the bf16 buffer of this (·, F) tensor, rows
  // past its own within the buffer allowed (capacity_bytes: the spare rows below a frozen W where the model keeps A
  // in bf16). The product reads out as rounded into out_packed and sums in f32 on CUDA (in double on the CPU), s
  // applied to the sum, as the linear's own product does.
  const Tensor* u_a = nullptr;
  int64_t u_row0 = 0, u_rows = 0;
  float u_scale = 1.f;
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
  // Or null. With dgu: also the gate/up group's LoRA s·g into dgu's columns 2F .. 2F + 2R, written where its backward
  // reads it so that it makes no g (ops/lora_group.h's sg_written, INSTILL_CUDA_NEXT `swiglu_g`): s·g_gate = s · dgate·B_gate
  // into columns 2F..2F+R and s·g_up = s · dup·B_up into 2F+R..2F+2R, B_gate being rows 0..F, columns g_col0..g_col0+R
  // of this bf16 (rows >= 2F, ld) tensor and B_up rows F..2F, columns g_col0+R..g_col0+2R (the group's kept matrix,
  // whose B columns are block-diagonal; its other blocks are not read). The products read dgate, dup as rounded into
  // dgu and sum in f32 on CUDA (in double on the CPU), s applied to the sum, as the group's own product does.
  const Tensor* g_b = nullptr;
  int64_t g_col0 = 0, g_rank = 0;
  float g_scale = 1.f;
};

void swiglu_forward(const SwigluForwardArgs& args);
void swiglu_backward(const SwigluBackwardArgs& args);

}  // namespace instill
