// attention: causal grouped-query attention over packed sequences.
//
// The N tokens are cut into S segments by cu_seqlens (S+1, flash-attention varlen
// style): token i of segment [b, e) attends to tokens j with b <= j <= i only, so
// attention never crosses an example boundary in a packed row. Query head h reads
// KV head h / (H / KVH).
//
// Forward   out_i = Σ_j softmax_j(scale · q_i·k_j) v_j,   lse_i = log Σ_j exp(scale · q_i·k_j)
//           computed over tiles of keys with an online softmax (running max and sum
//           per query row), so memory is O(N) — no (T, T) score matrix is ever held.
// Backward  recomputes p_ij = exp(scale · q_i·k_j − lse_i) from the saved lse:
//             Δ_i = dout_i·out_i,  ds_ij = p_ij (dout_i·v_j − Δ_i)
//             dq_i = scale Σ_j ds_ij k_j,  dk_j = scale Σ_i ds_ij q_i,  dv_j = Σ_i p_ij dout_i
//           tile by tile, from the saved lse and Δ; dq, dk, dv are written (=).
// Sliding window (Mistral): with window W > 0, token i attends only to j with i − j < W
// (itself and the W − 1 before it, inside its segment); W = 0 is full causal attention.
// Everything f32, except that a forward / backward's activations (q, k, v, out, dout, dq,
// dk, dv) may all be bf16 instead (the model's bf16 activations: the same math, inputs read
// as stored, outputs rounded once; lse stays f32; decode is f32 only).
// cu_seqlens must start at 0, end at N and never decrease (E_ARG); it may
// live on the host or on the op's device (it is validated on the host either way, so a
// host copy spares a device backend the read back).
// seg_bounds (optional, internal): cu_seqlens expanded per token, (2, N) i32 on the op's
// device, row 0 the start and row 1 the end of each token's segment. Not checked against
// cu_seqlens: the model builds it once per pass so that the CUDA backend does not build
// and upload it on every call.
#pragma once

#include "runtime/tensor.h"

namespace instill {

struct AttentionForwardArgs {
  const Tensor* q;           // (N, H, D)
  const Tensor* k;           // (N, KVH, D)
  const Tensor* v;           // (N, KVH, D)
  const Tensor* cu_seqlens;  // (S+1) i32
  float scale;               // usually 1/sqrt(D)
  Tensor* out;               // (N, H, D) out
  Tensor* lse;               // (N, H) out
  int64_t window;            // 0: full causal; W > 0: sliding window of W tokens
  const Tensor* seg_bounds = nullptr;  // optional (2, N) i32, see above
  // Or, instead of out (give out null): a bf16 (N, ld) buffer, ld >= H·D, that receives out in its first H·D
  // columns (its other columns untouched), with bf16 q, k, v: o_proj's packed x (ops/lora_linear.h's x_packed),
  // written where that product reads it instead of copied there (the model, INSTILL_CUDA_NEXT=attn_pack).
  Tensor* out_packed = nullptr;
};

struct AttentionBackwardArgs {
  const Tensor* dout;        // (N, H, D)
  const Tensor* q;           // (N, H, D)
  const Tensor* k;           // (N, KVH, D)
  const Tensor* v;           // (N, KVH, D)
  const Tensor* out;         // (N, H, D) from forward
  const Tensor* lse;         // (N, H) from forward
  const Tensor* cu_seqlens;  // (S+1) i32
  float scale;
  Tensor* dq;                // (N, H, D) out
  Tensor* dk;                // (N, KVH, D) out
  Tensor* dv;                // (N, KVH, D) out
  int64_t window;            // as in the forward
  const Tensor* seg_bounds = nullptr;  // optional (2, N) i32, see above
  const Tensor* out_packed = nullptr;  // or, instead of out (null): the forward's out_packed, out in its first H·D columns
  // Or, instead of dv (null): a bf16 (N, ld) buffer receiving dv in its columns dv_col..dv_col + KVH·D (its other
  // columns untouched), with bf16 activations: the q/k/v group's packed dy (the model, INSTILL_CUDA_NEXT=dqkv_pack).
  Tensor* dv_packed = nullptr;
  int64_t dv_col = 0;
};

// Incremental decoding with a KV cache (one sequence). The n new tokens sit at absolute
// positions start .. start+n-1: their k/v rows are first written into the cache at
// rows [start, start+n), then new token i attends to cache rows [0, start+i], with the
// same online softmax as attention_forward. start + n must not exceed the cache length.
struct AttentionDecodeArgs {
  const Tensor* q;      // (n, H, D)
  const Tensor* k;      // (n, KVH, D) new keys
  const Tensor* v;      // (n, KVH, D) new values
  Tensor* k_cache;      // (T_max, KVH, D) in/out
  Tensor* v_cache;      // (T_max, KVH, D) in/out
  int64_t start;        // tokens already in the cache
  float scale;
  Tensor* out;          // (n, H, D) out
  int64_t window;       // 0: full causal; W > 0: sliding window of W tokens
};

void attention_forward(const AttentionForwardArgs& args);
void attention_decode(const AttentionDecodeArgs& args);
void attention_backward(const AttentionBackwardArgs& args);

}  // namespace instill
