// lora_group: lora_linear (ops/lora_linear.h) over up to three adapted linears that read the same x — a
// layer's q, k, v, or its gate and up — as one op, so that a backend can do once what each member would
// repeat. The result is the members' lora_linear calls in order, with dx summed over them:
//
// Forward   for each member i:  u_i = x·A_iᵀ,  y_i = x·W_iᵀ + bias_i + s·u_i·B_iᵀ
//           u (N, m·R) holds u_i in columns i·R..(i+1)·R (the backward reads it there)
// Backward  dx = Σ_i dy_i·W_i + s·g_i·A_i  (g_i = dy_i·B_i),  dA_i = s·g_iᵀ·x,  dB_i = s·dy_iᵀ·u_i
//           dx written (=) or added to (+=, accumulate_dx); dA_i, dB_i = or += by accumulate
//
// What a backend shares (CUDA, bf16/f16 weights, INSTILL_CUDA_NEXT=lora_group in the model): x packed
// into bf16 once ([x | s·u_1 | … | s·u_m]), one product for every u, and the group's frozen and low-rank
// terms in one kept bf16 matrix (below), so that the backward's g and dx are one product each over
// [dy_1 | … | dy_m | s·g_1 | … | s·g_m] instead of one per member with dx read and written again by each.
// The CPU runs the members' lora_linear in order (the same bits as calling them one by one).
//
// dtypes as lora_linear's: w f32, bf16 or f16 (all members alike); a, b, bias, u, da, db f32; x, y, dy, dx
// f32, or bf16 beside bf16/f16 weights. Every member has the same rank R.
#pragma once

#include "runtime/tensor.h"

namespace instill {

constexpr int kMaxLoraGroup = 3;

struct LoraGroupForwardArgs {
  const Tensor* x = nullptr;                           // (N, IN)
  int m = 0;                                           // members, 1..kMaxLoraGroup
  const Tensor* w[kMaxLoraGroup] = {};                 // (OUT_i, IN)
  const Tensor* bias[kMaxLoraGroup] = {};              // (OUT_i) or null
  const Tensor* a[kMaxLoraGroup] = {};                 // (R, IN)
  const Tensor* b[kMaxLoraGroup] = {};                 // (OUT_i, R)
  float scale = 1.f;                                   // s
  Tensor* y[kMaxLoraGroup] = {};                       // (N, OUT_i) out
  Tensor* u = nullptr;                                 // (N, m·R) out
  // Or null (the CUDA backend with bf16/f16 weights reads it; the CPU ignores it): the caller's kept matrix
  // for the group, bf16 (S + m·R, ld) with S = Σ OUT_i, ld >= IN + m·R and ld % 8 == 0, laid out as
  //   rows o_i..o_i + OUT_i (o_i = Σ_{j<i} OUT_j):  W_i in columns 0..IN, B_i in columns IN + i·R..IN + (i+1)·R,
  //                                                 zeros in the other members' B columns
  //   rows S + i·R..S + (i+1)·R:                    A_i in columns 0..IN
  // so that [x | s·u] times its first S rows is every y, and its first IN columns are the backward's
  // [W_1 ; … ; W_m ; A_1 ; … ; A_m]. With kept_has_w the W blocks and the zeros are in it already (the caller
  // keeps them so while no W changes); else the op writes them first. Every call writes the B and A blocks.
  // Without one, the backend makes the matrix for the call.
  Tensor* kept = nullptr;
  bool kept_has_w = false;
  // Or null. With x null: x in the first IN columns of this bf16 (N, ld) tensor, ld >= IN + m·R and ld % 8 == 0 (the
  // norm wrote it there: rmsnorm_forward's y_packed), into whose columns IN..IN+m·R the op writes s·u. bf16/f16
  // weights only; the CPU copies x out of it.
  Tensor* x_packed = nullptr;
  // With kept and kept_has_w: lora_pack_factors (ops/lora_pack.h) has written the B and A blocks for this call,
  // and no factor changed since: the op writes none (INSTILL_CUDA_NEXT=factor_pack). The CPU ignores it.
  bool factors_packed = false;
  // With x_packed: the caller will not read u (as lora_linear's u_unused): a backend may leave it unwritten.
  bool u_unused = false;
};

struct LoraGroupBackwardArgs {
  const Tensor* dy[kMaxLoraGroup] = {};  // (N, OUT_i)
  const Tensor* x = nullptr;             // (N, IN)
  int m = 0;
  const Tensor* w[kMaxLoraGroup] = {};
  const Tensor* a[kMaxLoraGroup] = {};
  const Tensor* b[kMaxLoraGroup] = {};
  const Tensor* u = nullptr;             // (N, m·R) from the forward
  float scale = 1.f;
  Tensor* dx = nullptr;                  // (N, IN) out, or null where nothing needs it (the first layer's, without
                                         // full fine-tuning: then no dx product runs)
  Tensor* da[kMaxLoraGroup] = {};        // (R, IN) out
  Tensor* db[kMaxLoraGroup] = {};        // (OUT_i, R) out
  bool accumulate = false;               // dA_i, dB_i += instead of =
  bool accumulate_dx = false;            // dx += instead of =
  // Or null: the kept matrix as this pass's forward left it (its A blocks written by that forward: no A may
  // change in between). Without one, the backend makes the matrix for the call.
  const Tensor* kept = nullptr;
  // Or null. With every dy[i] null: the members' dy already side by side in one bf16 (N, ld) tensor, ld >= S + m·R
  // and ld % 8 == 0, columns o_i..o_i + OUT_i (as the kept matrix's rows) — where swiglu_backward wrote gate and up's
  // (its dgu). The op then packs no dy, and may write s·g into columns S..S + m·R (scratch to the caller). bf16/f16
  // weights only.
  Tensor* dy_packed = nullptr;
  // Or null. With x null: x in the first IN columns of this bf16 tensor (the forward's x_packed).
  const Tensor* x_packed = nullptr;
  // With x_packed: its columns IN..IN+m·R still hold s·u in bf16 as this pass's forward wrote them (as lora_linear's
  // su_packed: dB may read them). Ignored by the CPU.
  bool su_packed = false;
  // dA and dB may be left to run behind the rest of the pass (the CUDA backend's side stream, INSTILL_CUDA_NEXT
  // side_grads, bf16/f16 weights): the caller then calls join_side_work(device) before it reads them, or overwrites
  // any tensor given here (x, dy, dy_packed, x_packed, u) that it keeps alive. Ignored by the CPU.
  bool side_grads = false;
};

// Validate (E_SHAPE / E_DTYPE / E_ARG naming the argument and member), then run on x's device.
void lora_group_forward(const LoraGroupForwardArgs& args);
void lora_group_backward(const LoraGroupBackwardArgs& args);

}  // namespace instill
