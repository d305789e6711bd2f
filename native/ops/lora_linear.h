// lora_linear: a frozen linear layer with a LoRA adapter, fused.
//
// Forward   u = x·Aᵀ                          (N, R)   kept for backward
//           y = x·Wᵀ + bias + s·u·Bᵀ           (N, OUT)   (+ residual, when given)
// The low-rank term is accumulated inside y's output tile (the GEMM's K range is
// [x | s·u] against [W | B]), never in a second pass over y.
//
// Backward  g  = dy·B                         (N, R)   computed once
//           dx = dy·W + s·g·A                  (N, IN)  one GEMM over [dy | s·g] and [W ; A]
//           dA = s·gᵀ·x                        (R, IN)
//           dB = s·dyᵀ·u                       (OUT, R)
// W never gets a gradient. dA and dB are written (=), or added to (+=) when
// `accumulate` is set, so micro-batches can sum into one gradient buffer. dx is
// written, or added to when `accumulate_dx` is set (the model sums q, k, v's
// input gradients, and gate and up's, inside the product: no separate add).
//
// dtypes: w f32, bf16 or f16; a, b, bias, u, da, db f32. The activations x, y, dy and dx f32, or
// each of them bf16 when w is bf16/f16 (the products round to bf16 anyway; a bf16 y or dx is the
// f32 result rounded once). The model keeps its MLP's wide activations in bf16 this way on a GPU.
#pragma once

#include "runtime/tensor.h"

namespace instill {

struct LoraLinearForwardArgs {
  const Tensor* x;     // (N, IN)
  const Tensor* w;     // (OUT, IN)
  const Tensor* bias;  // (OUT) or null
  const Tensor* a;     // (R, IN)
  const Tensor* b;     // (OUT, R)
  float scale;         // s = alpha / r (rsLoRA: alpha / sqrt(r))
  Tensor* y;           // (N, OUT) out
  Tensor* u;           // (N, R) out
  // The model's training pass (ignored by the CPU): also round A into the spare rows a backend keeps after
  // a bf16 W for the backward's [W ; A] (LlamaModel::reserve_lora_rows), so that the backward told
  // a_stacked need not; A must not change before that backward.
  bool stack_a = false;
  // Or null. (N, OUT) f32 with an f32 y, not y itself: y = residual + x·Wᵀ + bias + s·u·Bᵀ, so a layer's
  // output joins the residual stream in the same op (the model's o_proj and down_proj; on CUDA inside the
  // product, as its C, where the backend can).
  const Tensor* residual = nullptr;
  // Or null (used by the CUDA backend with a bf16/f16 w; ignored elsewhere): the caller's kept [W | B] for the
  // forward's product, bf16 (OUT, ld) with ld >= IN + R and ld % 8 == 0. With wb_has_w its first IN columns
  // already hold W rounded to bf16 (the caller keeps them so while W is unchanged), else the op copies W in
  // first. Each call writes B into columns IN..IN+R and multiplies by it, instead of copying W into a fresh
  // [W | B] (LlamaModel's kept [W | B], INSTILL_CUDA_NEXT=wb_cache).
  Tensor* wb = nullptr;
  bool wb_has_w = false;
  // Or null. With x null: x in the first IN columns of this bf16 (N, ld) tensor, ld >= IN + R and ld % 8 == 0 (the
  // CUDA backend's packed [x | s·u] operand, which the model's SwiGLU wrote h into: swiglu_pack), into whose
  // columns IN..IN+R the op writes s·u. bf16/f16 w only; the CUDA backend only (the CPU: E_UNSUPPORTED).
  Tensor* x_packed = nullptr;
  // With wb and wb_has_w: lora_pack_factors (ops/lora_pack.h) has written B into wb, and A below W where stack_a,
  // for this call, and no factor changed since: the op writes neither (INSTILL_CUDA_NEXT=factor_pack). The CPU
  // ignores it.
  bool factors_packed = false;
  // With x_packed: the caller will not read u (its backward reads s·u from x_packed: su_packed), so a backend may
  // leave u unwritten (CUDA with INSTILL_CUDA_NEXT=fewer_packs and s a power of two: u's product writes s·u into
  // x_packed in bf16 itself, no f32 u, no pack). The CPU writes u all the same.
  bool u_unused = false;
};

struct LoraLinearBackwardArgs {
  const Tensor* dy;  // (N, OUT)
  const Tensor* x;   // (N, IN)
  const Tensor* w;   // (OUT, IN)
  const Tensor* a;   // (R, IN)
  const Tensor* b;   // (OUT, R)
  const Tensor* u;   // (N, R) from forward
  float scale;
  Tensor* dx;        // (N, IN) out, or null when not needed
  Tensor* da;        // (R, IN) out
  Tensor* db;        // (OUT, R) out
  bool accumulate;   // da/db += instead of =
  bool accumulate_dx = false;  // dx += instead of = (dx must be given)
  bool a_stacked = false;      // this pass's forward ran with stack_a, and A is unchanged since
  // Or null. With x null: x in the first IN columns of this bf16 (N, ld) tensor (the forward's x_packed, its
  // columns IN.. as that forward left them or not: only the first IN are read). CUDA backend only.
  const Tensor* x_packed = nullptr;
  // Or null: dy already rounded to bf16 in the first OUT columns of this (N, ld) tensor, ld >= OUT + R and ld % 8 == 0
  // (rmsnorm_backward's dx_packed: the residual stream's gradient, which o_proj's and down_proj's backward take), so
  // the CUDA backend packs no dy and may write s·g into its columns OUT..OUT+R. dy is still given (the CPU and the
  // f32 paths read it); bf16/f16 w only.
  Tensor* dy_packed = nullptr;
  // Or null: the kept [W | B] this pass's forward was given (LoraLinearForwardArgs' wb), B unchanged since: the
  // CUDA backend may read B's bf16 copy from its columns IN..IN+R (INSTILL_CUDA_NEXT=fewer_packs) instead of
  // rounding B again. bf16/f16 w only; the CPU ignores it.
  const Tensor* wb = nullptr;
  // With x_packed: its columns IN..IN+R still hold s·u in bf16 as this pass's forward wrote them (nothing wrote there
  // since: the caller knows), so the CUDA backend's dB may read them (INSTILL_CUDA_NEXT=fewer_packs, s a power of two)
  // instead of rounding u again. Ignored by the CPU.
  bool su_packed = false;
  // dA and dB may be left to run behind the rest of the pass (the CUDA backend's side stream, INSTILL_CUDA_NEXT
  // side_grads, bf16/f16 weights): the caller then calls join_side_work(device) before it reads them, or overwrites
  // any tensor given here (x, dy, dy_packed, x_packed, u) that it keeps alive. Ignored by the CPU.
  bool side_grads = false;
};

// Validate shapes and dtypes (E_SHAPE / E_DTYPE naming the argument), then run on the tensors' device.
void lora_linear_forward(const LoraLinearForwardArgs& args);
void lora_linear_backward(const LoraLinearBackwardArgs& args);

// The checks alone, for ops that take the same tensors (lora_dropout).
void check_lora_linear_forward(const LoraLinearForwardArgs& args);
void check_lora_linear_backward(const LoraLinearBackwardArgs& args);

}  // namespace instill
