// The Llama-family decoder (Llama 1/2/3, Mistral without sliding window, Qwen2,
// Qwen3), forward and backward written once over the op interface (native/ops).
//
// One block, flags for the differences: q/k/v bias (Qwen2), per-head q/k RMSNorm
// (Qwen3), tied LM head, GQA. RoPE scaling lives in inv_freq, computed by the caller.
//
// Layer l (N tokens, residual stream x of (N, C)):
//   xn1 = rmsnorm(x, ln1)
//   q, k, v = linear(xn1)              [+ bias] [q/k rmsnorm per head] then rope
//   att = attention(q, k, v)           causal, per packed segment (cu_seqlens)
//   x2  = x + linear_o(att)
//   xn2 = rmsnorm(x2, ln2)
//   x'  = x2 + linear_down(silu(linear_gate(xn2)) · linear_up(xn2))
// Loss: linear_cross_entropy(rmsnorm(x_L, norm), head, targets), targets already
// shifted (position t predicts targets[t]; -100 = ignored).
//
// Two training modes:
// - LoRA (add_lora): base weights are frozen and get no gradient buffer. LoRA gradients
//   use += when `accumulate` is set (micro-batches of one optimizer step), = otherwise.
// - Full fine-tuning (set_full(true)): every weight is trainable, must be f32, and owns a
//   gradient buffer of its shape: linears dW = dyᵀ·x (and dbias = Σ_rows dy), norms' dw,
//   the embedding (token rows of dx0) and the LM head (when tied, the head's gradient
//   adds into the embedding's). Parameter gradients always use +=; a call without
//   `accumulate` first zeroes them. LoRA and full mode exclude each other.
// - Activations are allocated once per call, before the pass, as one struct per layer
//   (or, with checkpointing, one shared struct plus each layer's input; the backward
//   recomputes a layer's forward from its input right before that layer's backward).
//   The two norms' outputs and the SwiGLU product are never saved per layer: the
//   backward recomputes them (elementwise work) into one shared buffer each.
// - The model is not re-entrant: one call at a time (the binding enforces it).
// - Device: every weight, adapter, gradient, moment and activation lives on the device
//   given at construction (CPU or CUDA). Weights and token inputs may be handed in on the
//   host; they are copied over (inputs are validated on the host first). logits() returns a
//   host tensor, as does decode().
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "ops/cross_entropy.h"
#include "runtime/tensor.h"

namespace instill {

struct LlamaConfig {
  int64_t C = 0;    // hidden size
  int64_t F = 0;    // MLP intermediate size
  int64_t L = 0;    // layers
  int64_t H = 0;    // query heads
  int64_t KVH = 0;  // key/value heads
  int64_t D = 0;    // head dim
  int64_t V = 0;    // vocabulary
  float eps = 1e-5f;
  bool qkv_bias = false;
  bool qk_norm = false;
  bool tied = false;
  int64_t sliding_window = 0;  // 0: full causal attention (Mistral: W tokens)
};

// LoRA targets, in PEFT's usual order.
enum LoraTarget : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown, kNumTargets };
const char* lora_target_name(int target);  // "q_proj", ...

struct LoraParam {
  Tensor a, b;          // (R, IN), (OUT, R)
  Tensor da, db;        // gradients, same shapes
  Tensor ma, va, mb, vb;  // AdamW moments (allocated at the first step)
};

struct Linear {
  Tensor w;     // (OUT, IN) f32 | bf16 | f16 (frozen), f32 in full mode
  Tensor bias;  // (OUT) f32 or undefined
  Tensor dw, dbias;  // full mode only: gradients, same shapes
  int64_t in = 0, out = 0;
  bool has_lora = false;
  LoraParam lora;
  // On a GPU, where its memory allows (LlamaModel::prepare_wb, INSTILL_CUDA_NEXT=wb_cache): [W | B] kept for
  // lora_linear's forward product (its `wb`), W copied in on the first forward (wb_has_w), B each forward.
  Tensor wb;
  bool wb_has_w = false;
};

struct LayerWeights {
  Tensor ln1, ln2;         // (C)
  Tensor q_norm, k_norm;   // (D), Qwen3 only
  Tensor dln1, dln2, dq_norm, dk_norm;  // full mode only: gradients
  std::array<Linear, kNumTargets> lin;
  // On a GPU, in a pass that groups q, k, v (g 0) and gate, up (g 1) (LlamaModel::groups_, INSTILL_CUDA_NEXT=
  // lora_group): each group's kept matrix for lora_group (ops/lora_group.h), W copied in on the first forward.
  std::array<Tensor, 2> kept;
  std::array<bool, 2> kept_has_w = {false, false};
};

// Token-level inputs of one pass, flattened over rows: N = B·T.
struct ModelInputs {
  const Tensor* ids;         // (N) i32
  const Tensor* positions;   // (N) i32, restart at 0 per example
  const Tensor* cu_seqlens;  // (S+1) i32, segment boundaries (attention never crosses them)
  const Tensor* targets;     // (N) i32, -100 = ignored (training only)
  const Tensor* seg_bounds = nullptr;  // on a GPU: cu_seqlens expanded per token (ops/attention.h)
  // The same inputs on the host, where the ops check ids, positions and targets (ops/rope.h): on a GPU,
  // reading them back from the device would wait for all queued work, 4 times a layer.
  const ModelInputs* host = nullptr;
};

struct LlamaScratch;

class LlamaModel {
 public:
  // E_DEVICE when `device` is not available in this build / on this machine.
  LlamaModel(const LlamaConfig& cfg, Tensor inv_freq, Device device = Device::CPU);

  const LlamaConfig& config() const { return cfg_; }
  Device device() const { return device_; }

  // Sets a frozen weight by its Hugging Face name; E_ARG for an unknown name,
  // E_SHAPE / E_DTYPE for a tensor that does not fit the config.
  void set_weight(const std::string& name, const Tensor& t);
  // E_DATA naming the first missing weight.
  void check_complete() const;

  // Adds zero-initialised LoRA adapters (A and B) to the targets in `mask` (bit i =
  // LoraTarget i) of every layer. Replaces any previous adapters.
  void add_lora(uint32_t mask, int64_t r, float scale, float dropout = 0.0f);
  bool has_lora() const { return lora_r_ > 0; }
  int64_t lora_rank() const { return lora_r_; }
  uint32_t lora_mask() const { return lora_mask_; }
  LoraParam& lora(int64_t layer, int target);

  void set_checkpointing(bool on) { checkpointing_ = on; }
  bool checkpointing() const { return checkpointing_; }

  // Activation precision for this model's passes: "auto" (INSTILL_BF16_ACTIVATIONS if set, else bf16 on a GPU and
  // f32 on the CPU), "f32", "bf16" (the norm outputs, the MLP's and the attention's activations and their
  // gradients; see act_dtype()), "bf16-mlp" (all but the attention's). E_ARG for anything else. A set mode wins
  // over the environment variable.
  void set_activations(const std::string& mode);
  const char* activations() const;
  // The dtype the next pass keeps the norm outputs and the MLP's activations in ("f32" where bf16 does not apply: a
  // linear without an adapter, f32 weights, full fine-tuning); the attention's may stay f32 where theirs do not
  // (bf16-mlp, Qwen3's q/k norm, head dim above 256: attention_dtype()).
  const char* activation_dtype() const { return act_dtype() == DType::BF16 ? "bf16" : "f32"; }

  // Full fine-tuning on/off. On: every weight must be set and f32 (E_DTYPE naming the first
  // that is not), the model must have no LoRA adapters; allocates zeroed gradients. Off: frees them.
  void set_full(bool on);
  bool full() const { return full_; }
  // Every weight's Hugging Face name, in checkpoint order (embedding, layers, norm, head).
  std::vector<std::string> weight_names() const;
  // The weight (grad = false) or its gradient (grad = true, full mode only) by HF name; E_ARG otherwise.
  Tensor& weight(const std::string& name, bool grad);

  // Forward + backward. Returns the summed-then-normalised loss and the target count.
  // normalizer <= 0: divide by the count of this call. LoRA grads: += if accumulate, else =.
  // LoRA dropout (when the adapters have one) applies here only, with masks derived from
  // dropout_seed (one seed per step; see ops/lora_dropout.h), never in logits/decode.
  CrossEntropyResult loss_and_grads(const ModelInputs& in, double normalizer, bool accumulate, uint32_t step_seed = 0);
  // Forward only (no dropout, no gradient touched): the loss loss_and_grads would return.
  CrossEntropyResult loss(const ModelInputs& in, double normalizer);
  // Forward only: logits (N, V), or (S, V) for the last token of every non-empty segment
  // when last_only is set.
  Tensor logits(const ModelInputs& in, bool last_only);

  // Incremental decoding of one sequence with a KV cache (generation). decode_reset
  // allocates the cache for max_len tokens and empties it; decode appends ids (n) at
  // positions cache_len .. cache_len+n-1 and returns the logits (1, V) of the last one.
  void decode_reset(int64_t max_len);
  Tensor decode(const Tensor& host_ids);
  int64_t cache_len() const { return cache_len_; }

  // Zeroes every gradient (LoRA's, or every weight's in full mode).
  void zero_grads();

  // The optimizer, on the model's device (no parameter or gradient leaves it).
  // Trainable tensors, in a fixed order: LoRA mode, every adapter's A then B (layers in
  // order, targets in LoraTarget order); full mode, weight_refs()' order. E_ARG when the
  // model trains nothing (no adapters, not full).
  int64_t trainable_count();
  // One step: the global L2 norm of every trainable gradient (ops/adamw.h sum_squares),
  // then AdamW over every trainable tensor with the gradients scaled by
  // max_grad_norm / (norm + 1e-6) when max_grad_norm > 0 and the norm exceeds it
  // (torch.nn.utils.clip_grad_norm_). A norm that is not finite updates nothing.
  // step >= 1 is the optimizer's step count. Returns the norm before clipping.
  double optimizer_step(double lr, double beta1, double beta2, double eps, double weight_decay, double max_grad_norm,
                        int64_t step);
  // AdamW's first (which = 0) or second (1) moment of trainable `index`, allocated as
  // zeros when the optimizer has not run yet (so a checkpoint can be written into it).
  Tensor& moment(int64_t index, int which);

 private:
  struct Acts;
  struct WeightRef {
    std::string name;
    Tensor* w;
    Tensor* g;
  };
  std::vector<WeightRef> weight_refs();
  struct TrainableRef {
    Tensor* p;
    Tensor* g;
    Tensor* m;  // moments: undefined until the first step (or moment())
    Tensor* v;
  };
  std::vector<TrainableRef> trainables();
  CrossEntropyResult run(const ModelInputs& in, double normalizer, bool accumulate, uint32_t step_seed, bool backward);
  // cache_start >= 0: attend through the KV cache (decode) instead of over cu_seqlens.
  void layer_forward(int64_t l, const Tensor& x, Acts& a, Tensor& x_out, const ModelInputs& in, int64_t cache_start = -1);
  // recompute: xn1, xn2 and h are shared with other layers (make_acts), so compute them again first.
  void layer_backward(int64_t l, const Tensor& x, Acts& a, Tensor& dres, const ModelInputs& in, bool accumulate,
                      bool recompute, LlamaScratch& s);
  // y = x·Wᵀ (+ bias, + the adapter's term), plus `residual` when given (o_proj and down_proj: the
  // residual stream's sum inside the op, lora_linear's residual).
  // x_packed: x is that bf16 buffer's first columns (lora_linear's x_packed: down_proj's h under swiglu_pack).
  void linear_forward(Linear& lin, const Tensor& x, Tensor& y, Tensor& u, uint32_t seed,
                      const Tensor* residual = nullptr, Tensor* x_packed = nullptr);
  // dx null: nothing needs it (the first layer's q/k/v without full fine-tuning): no dx product runs, and a linear
  // without an adapter then has nothing to do.
  void linear_backward(Linear& lin, const Tensor& dy, const Tensor& x, const Tensor& u, Tensor* dx, bool accumulate_dx,
                       bool accumulate_grads, Tensor& tmp, uint32_t seed, const Tensor* x_packed = nullptr,
                       Tensor* dy_packed = nullptr);
  uint32_t dropout_seed(int64_t l, int target) const;
  // The linears of group g (0: q, k, v, reading xn1; 1: gate, up, reading xn2), ys / dys in that order: where
  // this pass groups them (groups_) and at least two have an adapter, those go through one lora_group op (the
  // others through linear_forward / linear_backward), else each through its own. The backward writes dx with
  // the first and adds the rest.
  // x_packed: x is the group's packed x (norm_pack: the norm wrote xn there).
  void group_forward(int64_t l, int g, const Tensor& x, Acts& a, Tensor* const* ys, Tensor* x_packed = nullptr);
  // dy_packed: gate and up's dy already side by side (swiglu_backward's dgu; both must be the group's members).
  // dx null: as linear_backward's.
  void group_backward(int64_t l, int g, const Tensor& x, Acts& a, const Tensor* const* dys, Tensor* dx,
                      bool accumulate, LlamaScratch& s, Tensor* dy_packed = nullptr, const Tensor* x_packed = nullptr);
  // The adapted targets of group g in layer l, in order (at most kMaxLoraGroup).
  int group_members(int64_t l, int g, int* members) const;
  // Whether group g of layer l goes through lora_group in this pass (see group_forward; on a GPU only with its
  // kept matrix, and only where its members' weights share a dtype kind).
  bool grouped(int64_t l, int g, const Acts& a) const;
  bool grouped(int64_t l, int g) const;  // the same without the pass's Acts (make_acts gives ug where this holds)
  // What groups_ should be for a pass starting now (no dropout; the CPU, or a GPU with INSTILL_CUDA_NEXT=lora_group).
  bool want_groups() const;
  // Whether a pass with activations of dtype act keeps h as down_proj's packed x (swiglu_pack on a GPU, bf16
  // activations, down_proj adapted, no dropout): SwiGLU writes h there and down_proj packs no x.
  bool pack_h(DType act) const;
  // Whether this pass keeps the attention's output as o_proj's packed x (attn_pack on a GPU, bf16 attention
  // activations, o_proj adapted, no dropout): the attention writes att there and o_proj packs no x.
  bool pack_att(DType act) const;
  // Whether this pass's norm backwards also write the residual gradient into o/down's packed dy (norm_pack on a GPU,
  // no dropout, o_proj or down_proj adapted over bf16/f16 weights).
  bool pack_dres() const;
  // Whether this pass keeps group g's input (xn1, xn2) as the group's packed x (norm_pack on a GPU, bf16
  // activations, every linear of the group adapted over bf16/f16 weights, the group's kept matrix held).
  bool pack_xn(int g, DType act) const;
  // rmsnorm_forward into y, or (packed) into y's first columns (y_packed).
  void norm_forward(const Tensor& x, const Tensor& w, Tensor& y, bool packed, Tensor& rstd);
  struct PassFlag;  // a bool member set for one pass (groups_, factors_packed_, su_kept_)
  // share: take xn1, xn2, h from another layer's Acts (one buffer for all layers). act: the dtype of
  // xn1, xn2, gate, up and h (act_dtype()).
  Acts make_acts(int64_t n, const Acts* share, DType act = DType::F32) const;
  // F32, or BF16 when this pass keeps in bf16 the activations that only feed bf16 products: the norm
  // outputs xn1 and xn2, the MLP's gate, up, h, the attention's q, k, v and output (attention_dtype()), and
  // their gradients. With INSTILL_BF16_ACTIVATIONS=1 (=mlp: all but the attention's; unset: 1 on a GPU, 0 on the CPU),
  // and only where lora_linear takes bf16 activations (every linear adapted, bf16/f16 weights; with
  // dropout, lora_dropout computes on f32 copies of them).
  DType act_dtype() const;
  // The dtype of q, k, v, the attention output and their gradients for a pass whose act_dtype() is act.
  DType attention_dtype(DType act) const;
  // Whether this pass's layers share xn1, xn2 and h (recomputed in the backward) instead of keeping their own.
  bool share_layer_acts(int64_t n, DType act) const;
  // The device bytes a pass over n tokens allocates (activations, residual stream, backward scratch), with the
  // layers' own xn1, xn2, h or one shared set: an estimate for the policies above and below.
  double pass_bytes(int64_t n, DType act, bool shared) const;
  // Before a pass on a GPU: keep each adapted linear's [W | B] (Linear::wb; a grouped one's in its group's
  // LayerWeights::kept instead) when INSTILL_CUDA_NEXT names wb_cache and the memory holds them beside the pass
  // (the layers' own activations first), else free them.
  void prepare_wb(int64_t n, DType act);
  // Frees the kept [W | B]s; whatever changes a W or the adapters calls it.
  void drop_wb();
  // After prepare_wb, on a GPU with INSTILL_CUDA_NEXT=factor_pack (no dropout): every B and A the pass's forwards
  // would round into the kept matrices that hold W already, in one lora_pack_factors call; the forwards are then told
  // factors_packed (factors_packed_, held for the pass by a PassFlag).
  bool pack_factors();
  void rope_qk(bool backward, Tensor& q, Tensor& k, const Tensor* positions, const Tensor* positions_host,
               Tensor* packed = nullptr);
  const Tensor& head() const { return cfg_.tied ? embed_ : lm_head_; }
  float attn_scale() const { return 1.0f / std::sqrt(static_cast<float>(cfg_.D)); }
  // t on the model's device (t itself when it is already there, else a copy).
  Tensor on_device(const Tensor& t) const;
  void reserve_lora_rows(Tensor& w, int64_t r) const;
  ModelInputs inputs_on_device(const ModelInputs& in, std::array<Tensor, 5>& keep) const;
  Tensor empty(const Shape& s) const { return Tensor::empty(s, DType::F32, device_); }
  Tensor zeros(const Shape& s) const { return Tensor::zeros(s, DType::F32, device_); }

  LlamaConfig cfg_;
  Device device_ = Device::CPU;
  Tensor inv_freq_;  // (D/2)
  Tensor embed_, norm_, lm_head_;
  Tensor dembed_, dnorm_, dlm_head_;  // full mode only
  std::vector<Tensor> full_m_, full_v_;  // full mode: AdamW moments, in weight_refs()' order
  bool full_ = false;
  std::vector<LayerWeights> layers_;
  int64_t lora_r_ = 0;
  uint32_t lora_mask_ = 0;
  float lora_scale_ = 1.0f;
  float lora_dropout_ = 0.0f;
  bool dropout_active_ = false;  // inside loss_and_grads with lora_dropout_ > 0
  bool stack_a_ = false;         // inside a pass with a backward: lora_linear's stack_a / a_stacked
  // inside a pass (run()) without dropout, on the CPU or with INSTILL_CUDA_NEXT=lora_group: q, k, v and gate, up
  // through lora_group (group_forward)
  bool groups_ = false;
  bool factors_packed_ = false;  // inside a pass whose factors pack_factors() wrote
  bool su_intact_ = false;       // set by layer_backward: its packed x buffers still hold the forward's s·u
  bool su_kept_ = false;         // inside a pass whose backward will read s·u there (layers' own packed x)
  // inside a backward whose LoRA dA and dB go to the device's side stream (INSTILL_CUDA_NEXT=side_grads; not with
  // checkpointing, shared activations or dropout, which rewrite what they read): run() and layer_backward() join it
  bool side_grads_ = false;
  int act_mode_ = 0;  // set_activations: 0 auto, 1 f32, 2 bf16-mlp, 3 bf16
  bool wb_groups_ = false;  // the kept matrices held are the groups' (LayerWeights::kept) beside the others' wb
  uint32_t step_seed_ = 0;
  bool checkpointing_ = false;
  int64_t wb_bytes_ = 0;  // held by the Linear::wb and LayerWeights::kept tensors
  std::vector<Tensor> k_cache_, v_cache_;  // per layer (T_max, KVH, D)
  int64_t cache_len_ = 0;
};

}  // namespace instill
