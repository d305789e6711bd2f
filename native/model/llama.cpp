#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "ops/adamw.h"
#include "ops/add.h"
#include "ops/attention.h"
#include "ops/backend.h"
#include "ops/check.h"
#include "ops/embedding.h"
#include "ops/lora_dropout.h"
#include "ops/lora_group.h"
#include "ops/lora_linear.h"
#include "ops/lora_pack.h"
#include "ops/matmul.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/swiglu.h"
#include "runtime/error.h"
#include "runtime/next.h"

namespace instill {

namespace {
constexpr int32_t kIgnoreIndex = -100;
// The targets of each group (group_forward): they read the same x.
constexpr int kGroupTargets[2][kMaxLoraGroup] = {{kQ, kK, kV}, {kGate, kUp, -1}};
constexpr int kGroupSize[2] = {3, 2};
const char* const kTargetNames[kNumTargets] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
}  // namespace

const char* lora_target_name(int target) {
  if (target < 0 || target >= kNumTargets) fail(ErrorCode::Arg, "LoRA target index ", target, " out of range");
  return kTargetNames[target];
}

// Activations of one layer (shapes for N tokens). xn1, xn2 and h are cheap to recompute
// (a norm, an elementwise product), so on the CPU every layer's Acts shares one buffer for
// each and the backward recomputes them from x, x2 and gate/up (run()); the rest is saved
// per layer.
struct LlamaModel::Acts {
  Tensor xn1, rstd1;              // (N, C) shared on the CPU; f32, or bf16 (act_dtype()), (N)
  Tensor q, k, v;                 // (N, H·D), (N, KVH·D), (N, KVH·D); q, k after norm and rope
  Tensor q_pre, k_pre;            // Qwen3: q, k before the per-head norm
  Tensor q_rstd, k_rstd;          // Qwen3: (N·H), (N·KVH)
  Tensor att, lse;                // (N, H·D), (N, H)
  Tensor x2;                      // (N, C) residual after attention
  Tensor xn2, rstd2;              // (N, C) as xn1, (N)
  Tensor gate, up, h;             // (N, F), h shared on the CPU; f32, or bf16 (act_dtype())
  bool h_packed = false;          // h is down_proj's packed x: bf16 (N, round8(F + R)), h in its first F columns
  bool att_packed = false;        // att is o_proj's packed x: bf16 (N, round8(H·D + R)), att in its first H·D columns
  bool xn1_packed = false, xn2_packed = false;  // xn1 / xn2 is its group's packed x (norm_pack): (N, round8(C + m·R))
  std::array<Tensor, kNumTargets> u;  // (N, R) per adapted linear
  std::array<Tensor, 2> ug;           // (N, m·R) per group of m >= 2 adapted linears (group_forward)
};

// Backward scratch, shared by all layers.
struct LlamaScratch {
  Tensor dxn, tmp;      // (N, C)
  Tensor dh, dgate, dup;  // (N, F)
  Tensor dgu;           // (N, round8(2F + 2R)) bf16: gate and up's dy packed for lora_group (swiglu_pack), or none
  Tensor dqkv;          // (N, round8(S + 3R)) bf16, S = (H + 2·KVH)·D: q, k and v's dy packed for lora_group (dqkv_pack),
                        // or none
  Tensor dres_packed;   // (N, round8(C + R)) bf16: the residual gradient for o/down's backward (norm_pack), or none
  Tensor dres_packed_o;  // with side_grads, a second one: o's (the first is down's), so that each norm's backward
                         // rewrites the one whose reader's dA and dB were queued longest ago
  // side_grads: side_work_mark() after the last layer's backward of down, gate/up, o and q/k/v, each the last to read
  // its packed dy (dres_packed, dgu, dres_packed_o, dqkv): where the next write of that buffer joins
  uint64_t side_down = 0, side_gu = 0, side_o = 0, side_qkv = 0;
  Tensor datt, dq;      // (N, H·D)
  Tensor dk, dv;        // (N, KVH·D)
};

LlamaModel::LlamaModel(const LlamaConfig& c, Tensor inv_freq, Device device) : cfg_(c), device_(device) {
  if (!device_available(device)) {
    fail(ErrorCode::Device, "device '", device_name(device), "' is not available: ", device_unavailable_reason(device));
  }
  if (c.C <= 0 || c.F <= 0 || c.L <= 0 || c.H <= 0 || c.KVH <= 0 || c.D <= 0 || c.V <= 0) {
    fail(ErrorCode::Arg, "model dimensions must be positive (hidden ", c.C, ", intermediate ", c.F, ", layers ", c.L,
         ", heads ", c.H, ", kv heads ", c.KVH, ", head dim ", c.D, ", vocab ", c.V, ")");
  }
  if (c.H % c.KVH != 0) fail(ErrorCode::Arg, "attention heads (", c.H, ") must be a multiple of KV heads (", c.KVH, ")");
  if (c.D % 2 != 0) fail(ErrorCode::Arg, "head dim must be even for RoPE, got ", c.D);
  if (!(c.eps > 0)) fail(ErrorCode::Arg, "rms_norm_eps must be positive");
  if (c.sliding_window < 0) fail(ErrorCode::Arg, "sliding window must be >= 0, got ", c.sliding_window);
  need(&inv_freq, "inv_freq");
  need_dtype(inv_freq, "inv_freq", {DType::F32});
  need_shape(inv_freq, "inv_freq", {c.D / 2}, "(head_dim / 2,)");
  inv_freq_ = on_device(inv_freq);
  layers_.resize(static_cast<size_t>(c.L));
  for (auto& lw : layers_) {
    const int64_t ins[kNumTargets] = {c.C, c.C, c.C, c.H * c.D, c.C, c.C, c.F};
    const int64_t outs[kNumTargets] = {c.H * c.D, c.KVH * c.D, c.KVH * c.D, c.C, c.F, c.F, c.C};
    for (int t = 0; t < kNumTargets; ++t) {
      lw.lin[static_cast<size_t>(t)].in = ins[t];
      lw.lin[static_cast<size_t>(t)].out = outs[t];
    }
  }
}

Tensor LlamaModel::on_device(const Tensor& t) const {
  if (!t.defined() || t.device() == device_) return t;
  Tensor out = Tensor::empty(t.shape(), t.dtype(), device_);
  copy_bytes(out.data(), device_, t.data(), t.device(), t.nbytes());
  return out;
}

void LlamaModel::set_weight(const std::string& name, const Tensor& t) {
  drop_wb();  // a kept [W | B] holds a copy of the old W
  need(&t, name.c_str());
  const char* n = name.c_str();
  if (full_) need_dtype(t, n, {DType::F32});  // full fine-tuning trains every weight in f32
  auto linear_w = [&](Tensor& dst, int64_t out, int64_t in) {
    need_dtype(t, n, {DType::F32, DType::BF16, DType::F16});
    need_shape(t, n, {out, in}, "(out, in) from config.json");
    dst = on_device(t);
  };
  auto vec = [&](Tensor& dst, int64_t len) {
    need_dtype(t, n, {DType::F32});
    need_shape(t, n, {len}, "from config.json");
    dst = on_device(t);
  };
  if (name == "model.embed_tokens.weight") return linear_w(embed_, cfg_.V, cfg_.C);
  if (name == "lm_head.weight") {
    if (cfg_.tied) fail(ErrorCode::Arg, "lm_head.weight given to a model with tied embeddings");
    return linear_w(lm_head_, cfg_.V, cfg_.C);
  }
  if (name == "model.norm.weight") return vec(norm_, cfg_.C);
  const std::string pre = "model.layers.";
  if (starts_with(name, pre)) {
    size_t pos = pre.size();
    char* end = nullptr;
    const long l = std::strtol(name.c_str() + pos, &end, 10);
    if (end != name.c_str() + pos && *end == '.' && l >= 0 && l < cfg_.L) {
      const std::string rest(end + 1);
      LayerWeights& lw = layers_[static_cast<size_t>(l)];
      if (rest == "input_layernorm.weight") return vec(lw.ln1, cfg_.C);
      if (rest == "post_attention_layernorm.weight") return vec(lw.ln2, cfg_.C);
      if (cfg_.qk_norm && rest == "self_attn.q_norm.weight") return vec(lw.q_norm, cfg_.D);
      if (cfg_.qk_norm && rest == "self_attn.k_norm.weight") return vec(lw.k_norm, cfg_.D);
      for (int ti = 0; ti < kNumTargets; ++ti) {
        Linear& lin = lw.lin[static_cast<size_t>(ti)];
        const std::string mod = std::string(ti <= kO ? "self_attn." : "mlp.") + kTargetNames[ti];
        if (rest == mod + ".weight") return linear_w(lin.w, lin.out, lin.in);
        if (cfg_.qkv_bias && ti <= kV && rest == mod + ".bias") return vec(lin.bias, lin.out);
      }
    }
  }
  fail(ErrorCode::Arg, "unexpected weight '", name, "' for this model (", cfg_.L, " layers",
       cfg_.qkv_bias ? ", q/k/v bias" : "", cfg_.qk_norm ? ", q/k norm" : "", cfg_.tied ? ", tied embeddings" : "", ")");
}

void LlamaModel::check_complete() const {
  auto need_w = [](const Tensor& t, const std::string& name) {
    if (!t.defined()) fail(ErrorCode::Data, "weight '", name, "' is missing from the checkpoint");
  };
  need_w(embed_, "model.embed_tokens.weight");
  need_w(norm_, "model.norm.weight");
  if (!cfg_.tied) need_w(lm_head_, "lm_head.weight");
  for (int64_t l = 0; l < cfg_.L; ++l) {
    const LayerWeights& lw = layers_[static_cast<size_t>(l)];
    const std::string p = cat("model.layers.", l, ".");
    need_w(lw.ln1, p + "input_layernorm.weight");
    need_w(lw.ln2, p + "post_attention_layernorm.weight");
    if (cfg_.qk_norm) {
      need_w(lw.q_norm, p + "self_attn.q_norm.weight");
      need_w(lw.k_norm, p + "self_attn.k_norm.weight");
    }
    for (int ti = 0; ti < kNumTargets; ++ti) {
      const std::string mod = p + (ti <= kO ? "self_attn." : "mlp.") + kTargetNames[ti];
      need_w(lw.lin[static_cast<size_t>(ti)].w, mod + ".weight");
      if (cfg_.qkv_bias && ti <= kV) need_w(lw.lin[static_cast<size_t>(ti)].bias, mod + ".bias");
    }
  }
}

// A bf16 frozen weight on a GPU gets r spare rows after its own (the same buffer, outside the
// tensor): the CUDA backward stacks A there and multiplies by [W ; A] in place, instead of
// copying W next to A on every call (ops/lora_linear.h; a copy of every frozen weight per
// step). Done once, when the adapter is added; a weight set later goes back to the copy.
void LlamaModel::reserve_lora_rows(Tensor& w, int64_t r) const {
  if (device_ == Device::CPU || w.dtype() != DType::BF16 || w.ndim() != 2) return;
  const int64_t out = w.dim(0), in = w.dim(1);
  const size_t need = static_cast<size_t>((out + r) * in) * dtype_size(DType::BF16);
  if (w.capacity_bytes() >= need) return;
  Tensor big = Tensor::empty({out + r, in}, DType::BF16, device_);
  copy_bytes(big.data(), device_, w.data(), w.device(), w.nbytes());
  w = big.leading_rows(out);
}

void LlamaModel::add_lora(uint32_t mask, int64_t r, float scale, float dropout) {
  if (full_) fail(ErrorCode::Arg, "the model is in full fine-tuning mode (every weight trainable): LoRA adapters cannot be added");
  if (!(dropout >= 0.0f && dropout < 1.0f)) fail(ErrorCode::Arg, "LoRA dropout must be in [0, 1), got ", dropout);
  if (r < 1) fail(ErrorCode::Arg, "LoRA rank must be >= 1, got ", r);
  if (mask == 0 || mask >= (1u << kNumTargets)) fail(ErrorCode::Arg, "LoRA target mask ", mask, " selects no valid module");
  if (!std::isfinite(scale)) fail(ErrorCode::Arg, "LoRA scale must be finite");
  drop_wb();  // sized for the old rank and targets
  for (auto& lw : layers_) {
    for (int ti = 0; ti < kNumTargets; ++ti) {
      Linear& lin = lw.lin[static_cast<size_t>(ti)];
      lin.has_lora = (mask >> ti) & 1u;
      lin.lora = LoraParam{};
      if (!lin.has_lora) continue;
      lin.lora.a = zeros({r, lin.in});
      lin.lora.b = zeros({lin.out, r});
      lin.lora.da = zeros({r, lin.in});
      lin.lora.db = zeros({lin.out, r});
      reserve_lora_rows(lin.w, r);
    }
  }
  lora_r_ = r;
  lora_mask_ = mask;
  lora_scale_ = scale;
  lora_dropout_ = dropout;
}

std::vector<LlamaModel::WeightRef> LlamaModel::weight_refs() {
  std::vector<WeightRef> out;
  out.push_back({"model.embed_tokens.weight", &embed_, &dembed_});
  for (int64_t l = 0; l < cfg_.L; ++l) {
    LayerWeights& lw = layers_[static_cast<size_t>(l)];
    const std::string p = cat("model.layers.", l, ".");
    out.push_back({p + "input_layernorm.weight", &lw.ln1, &lw.dln1});
    for (int ti = 0; ti < kNumTargets; ++ti) {
      Linear& lin = lw.lin[static_cast<size_t>(ti)];
      const std::string mod = p + (ti <= kO ? "self_attn." : "mlp.") + kTargetNames[ti];
      out.push_back({mod + ".weight", &lin.w, &lin.dw});
      if (cfg_.qkv_bias && ti <= kV) out.push_back({mod + ".bias", &lin.bias, &lin.dbias});
      if (cfg_.qk_norm && ti == kK) {
        out.push_back({p + "self_attn.q_norm.weight", &lw.q_norm, &lw.dq_norm});
        out.push_back({p + "self_attn.k_norm.weight", &lw.k_norm, &lw.dk_norm});
      }
    }
    out.push_back({p + "post_attention_layernorm.weight", &lw.ln2, &lw.dln2});
  }
  out.push_back({"model.norm.weight", &norm_, &dnorm_});
  if (!cfg_.tied) out.push_back({"lm_head.weight", &lm_head_, &dlm_head_});
  return out;
}

std::vector<std::string> LlamaModel::weight_names() const {
  std::vector<std::string> names;
  for (const WeightRef& r : const_cast<LlamaModel*>(this)->weight_refs()) names.push_back(r.name);
  return names;
}

Tensor& LlamaModel::weight(const std::string& name, bool grad) {
  for (const WeightRef& r : weight_refs()) {
    if (r.name != name) continue;
    if (!grad) {
      if (!r.w->defined()) fail(ErrorCode::Arg, "weight '", name, "' has not been set");
      return *r.w;
    }
    if (!full_) fail(ErrorCode::Arg, "weight '", name, "' has no gradient: base weights are frozen outside full fine-tuning mode");
    return *r.g;
  }
  fail(ErrorCode::Arg, "unknown weight '", name, "' for this model (", cfg_.L, " layers",
       cfg_.qkv_bias ? ", q/k/v bias" : "", cfg_.qk_norm ? ", q/k norm" : "", cfg_.tied ? ", tied embeddings" : "", ")");
}

void LlamaModel::set_full(bool on) {
  drop_wb();
  full_m_.clear();
  full_v_.clear();
  if (!on) {
    for (const WeightRef& r : weight_refs()) *r.g = Tensor();
    full_ = false;
    return;
  }
  if (has_lora()) fail(ErrorCode::Arg, "full fine-tuning: the model has LoRA adapters (full mode trains the base weights instead)");
  check_complete();
  for (const WeightRef& r : weight_refs()) {
    if (r.w->dtype() != DType::F32) {
      fail(ErrorCode::DType, "full fine-tuning needs every weight in f32, '", r.name, "' is ", dtype_name(r.w->dtype()),
           " (load the model with dtype 'f32')");
    }
  }
  for (const WeightRef& r : weight_refs()) *r.g = zeros(r.w->shape());
  full_ = true;
}

uint32_t LlamaModel::dropout_seed(int64_t l, int target) const {
  return dropout_fmix32(step_seed_ ^ (static_cast<uint32_t>(l * kNumTargets + target + 1) * 0x85ebca6bu));
}

LoraParam& LlamaModel::lora(int64_t layer, int target) {
  if (layer < 0 || layer >= cfg_.L) fail(ErrorCode::Arg, "layer ", layer, " out of range [0, ", cfg_.L, ")");
  if (target < 0 || target >= kNumTargets) fail(ErrorCode::Arg, "LoRA target ", target, " out of range");
  Linear& lin = layers_[static_cast<size_t>(layer)].lin[static_cast<size_t>(target)];
  if (!lin.has_lora) fail(ErrorCode::Arg, "layer ", layer, " ", kTargetNames[target], " has no LoRA adapter");
  return lin.lora;
}

// The layers share one xn1, xn2 and h, recomputed in the backward (2 norms and a SwiGLU per layer, cheap beside
// its products, for (2C + F)·N values less per layer): always on the CPU; on a GPU only when its memory would
// not hold every layer's own (the recompute was 1.2 ms of a 46 ms 1B step on an H200, bench/RESULTS.md run 12;
// keeping them is 1.5 GB more at 2048 tokens of that model, 12 GB at 4096 of an 8B one). The estimate counts
// what the pass allocates (the layers' activations, the residual stream, the backward's scratch) and keeps
// 2 GiB for the loss's chunk buffers and slack; the results are the same bits either way.
namespace {
constexpr double kPassSlackBytes = 2.0 * (1 << 30);  // beside pass_bytes: the loss's chunk buffers and slack
}  // namespace

double LlamaModel::pass_bytes(int64_t n, DType act, bool shared) const {
  const LlamaConfig& c = cfg_;
  const int64_t f = 4, m = static_cast<int64_t>(dtype_size(act)), q = c.H * c.D, kv = c.KVH * c.D;
  const int64_t own = n * (f * (2 + 2 * q + 2 * kv + c.H + c.C + lora_r_ * kNumTargets) + m * 2 * c.F +
                           (c.qk_norm ? f * (q + kv + c.H + c.KVH) : 0));
  const int64_t share = n * m * (2 * c.C + c.F);  // xn1, xn2, h: per layer, or once
  const int64_t rest = n * (f * ((c.L + 5) * c.C + 2 * q + 2 * kv) + m * 3 * c.F);  // xs, xf, dres, scratch
  // an f16 head: the CUDA loss makes a bf16 copy of it per call (cross_entropy.cu), 1 GiB for an 8B model
  const int64_t head16 = head().dtype() == DType::F16 ? c.V * ((c.C + 7) / 8 * 8) * 2 : 0;
  return static_cast<double>(c.L) * static_cast<double>(own) + static_cast<double>(shared ? 1 : c.L) * share +
         static_cast<double>(rest + head16);
}

bool LlamaModel::share_layer_acts(int64_t n, DType act) const {
  if (device_ == Device::CPU) return true;
  return pass_bytes(n, act, false) + kPassSlackBytes > static_cast<double>(device_available_bytes(device_));
}

// The kept [W | B] (lora_linear's wb): a forward then writes B (OUT·R values) instead of copying W (1.8 ms of
// run 12's 46 ms 1B step, bench/RESULTS.md), for one more copy of the adapted weights in memory (2 GB for the
// 1B model, 14 GB for an 8B one). So only where the GPU holds it beside the pass, after the layers' own
// activations (share_layer_acts: the same estimate and 2 GiB of slack), and freed again when it no longer
// fits. The results are the same bits either way (the same bf16 copy of W, made once).
void LlamaModel::prepare_wb(int64_t n, DType act) {
  // (with LoRA dropout the training forwards take lora_dropout's own path, which has no use for it)
  if (device_ == Device::CPU || !has_lora() || full_ || lora_dropout_ > 0.0f || !next_enabled(Next::WbCache)) {
    return drop_wb();
  }
  // which linears keep one (adapted, a bf16/f16 W), and its row: [W | B] with 16-byte rows; in a pass that groups
  // them (groups_), the members of a group of two or more keep their group's matrix instead (ops/lora_group.h:
  // [W_i | B columns of every member] rows, then the members' A rows)
  const auto keeps = [](const Linear& lin) { return lin.has_lora && lin.w.dtype() != DType::F32; };
  const auto cols = [&](const Linear& lin) { return (lin.in + lora_r_ + 7) / 8 * 8; };
  const auto bf16_bytes = static_cast<int64_t>(dtype_size(DType::BF16));
  struct GroupShape {
    int m = 0;
    int64_t rows = 0, cols = 0;
  };
  std::vector<std::array<GroupShape, 2>> gshape(layers_.size());
  std::vector<std::array<bool, kNumTargets>> in_group(layers_.size());
  int64_t bytes = 0;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerWeights& lw = layers_[l];
    in_group[l].fill(false);
    for (int g = 0; g < 2 && groups_; ++g) {
      int members[kMaxLoraGroup];
      const int m = group_members(static_cast<int64_t>(l), g, members);
      bool all_keep = m >= 2;
      for (int j = 0; j < m && all_keep; ++j) all_keep = keeps(lw.lin[static_cast<size_t>(members[j])]);
      if (!all_keep) continue;
      GroupShape& gs = gshape[l][static_cast<size_t>(g)];
      gs.m = m;
      gs.rows = m * lora_r_;
      for (int j = 0; j < m; ++j) {
        gs.rows += lw.lin[static_cast<size_t>(members[j])].out;
        in_group[l][static_cast<size_t>(members[j])] = true;
      }
      gs.cols = (lw.lin[static_cast<size_t>(members[0])].in + m * lora_r_ + 7) / 8 * 8;
      bytes += gs.rows * gs.cols * bf16_bytes;
    }
    for (int t = 0; t < kNumTargets; ++t) {
      const Linear& lin = lw.lin[static_cast<size_t>(t)];
      if (keeps(lin) && !in_group[l][static_cast<size_t>(t)]) bytes += lin.out * cols(lin) * bf16_bytes;
    }
  }
  if (bytes == 0) return drop_wb();
  const double avail = static_cast<double>(device_available_bytes(device_)) + static_cast<double>(wb_bytes_);
  const bool own_acts = !checkpointing_ && pass_bytes(n, act, false) + kPassSlackBytes <= avail;
  if (pass_bytes(n, act, !own_acts) + static_cast<double>(bytes) + kPassSlackBytes > avail) return drop_wb();
  if (wb_bytes_ == bytes && wb_groups_ == groups_) return;  // kept from an earlier pass
  drop_wb();
  try {
    for (size_t l = 0; l < layers_.size(); ++l) {
      LayerWeights& lw = layers_[l];
      for (int t = 0; t < kNumTargets; ++t) {
        Linear& lin = lw.lin[static_cast<size_t>(t)];
        if (!keeps(lin) || in_group[l][static_cast<size_t>(t)]) continue;
        lin.wb = Tensor::empty({lin.out, cols(lin)}, DType::BF16, device_);
        lin.wb_has_w = false;
      }
      for (size_t g = 0; g < 2; ++g) {
        const GroupShape& gs = gshape[l][g];
        if (gs.m == 0) continue;
        lw.kept[g] = Tensor::empty({gs.rows, gs.cols}, DType::BF16, device_);
        lw.kept_has_w[g] = false;
      }
    }
  } catch (...) {
    drop_wb();  // none kept rather than some (an allocation failed partway)
    throw;
  }
  wb_bytes_ = bytes;
  wb_groups_ = groups_;
}

// Every linear's, whatever wb_bytes_ says (a handful of empty tensors where none is kept).
void LlamaModel::drop_wb() {
  for (LayerWeights& lw : layers_) {
    for (Linear& lin : lw.lin) {
      lin.wb = Tensor();
      lin.wb_has_w = false;
    }
    lw.kept = {};
    lw.kept_has_w = {false, false};
  }
  wb_bytes_ = 0;
  wb_groups_ = false;
}

namespace {
// INSTILL_BF16_ACTIVATIONS: "0" (f32 activations), "mlp" (all but the attention's in bf16), "1" (all in bf16);
// unset: "1" on a GPU (runs 14 and 15 timed it there: 36.9 against 41.6 ms a 1B step, every test passed, its
// gradients as near the f32-activation pass as the CPU's own bf16 pass, bench/RESULTS.md), "0" on the CPU (where
// nothing has timed it faster). PyTorch's bf16 training keeps its activations in bf16 too. Read on every pass,
// so a test can compare; any other value is an error, not a silent f32 pass. A model's set_activations() wins.
enum class Bf16Acts { Off, Mlp, All };
Bf16Acts bf16_activations_switch(Device device, int mode) {
  if (mode == 1) return Bf16Acts::Off;
  if (mode == 2) return Bf16Acts::Mlp;
  if (mode == 3) return Bf16Acts::All;
  const char* e = std::getenv("INSTILL_BF16_ACTIVATIONS");
  if (e == nullptr || *e == '\0') return device == Device::CPU ? Bf16Acts::Off : Bf16Acts::All;
  if (std::strcmp(e, "1") == 0) return Bf16Acts::All;
  if (std::strcmp(e, "mlp") == 0) return Bf16Acts::Mlp;
  if (std::strcmp(e, "0") == 0) return Bf16Acts::Off;
  fail(ErrorCode::Arg, "INSTILL_BF16_ACTIVATIONS='", e, "': use 0 (f32 activations), mlp or 1 (bf16 activations)");
}
const char* const kActModes[] = {"auto", "f32", "bf16-mlp", "bf16"};
}  // namespace

void LlamaModel::set_activations(const std::string& mode) {
  for (int i = 0; i < 4; ++i) {
    if (mode == kActModes[i]) {
      act_mode_ = i;
      return;
    }
  }
  fail(ErrorCode::Arg, "activations '", mode, "': use auto, f32, bf16 or bf16-mlp");
}

const char* LlamaModel::activations() const { return kActModes[act_mode_]; }

DType LlamaModel::act_dtype() const {
  if (full_ || bf16_activations_switch(device_, act_mode_) == Bf16Acts::Off) return DType::F32;
  for (const auto& lw : layers_) {
    for (const Linear& lin : lw.lin) {
      if (!lin.has_lora || lin.w.dtype() == DType::F32) return DType::F32;
    }
  }
  return DType::BF16;
}

// q, k, v, the attention output and their gradients follow act_dtype(), except in bf16-mlp mode (=mlp)
// and with Qwen3's q/k norm, whose backward (rmsnorm's) takes f32 gradients: there they stay f32.
DType LlamaModel::attention_dtype(DType act) const {
  if (act == DType::F32 || cfg_.qk_norm || bf16_activations_switch(device_, act_mode_) != Bf16Acts::All) return DType::F32;
  if (cfg_.D > 256) return DType::F32;  // CUDA's bf16 rope (its per-token kernel) takes D <= 256
  return act;
}

LlamaModel::Acts LlamaModel::make_acts(int64_t n, const Acts* share, DType act) const {
  const LlamaConfig& c = cfg_;
  auto e = [this](Shape s) { return empty(s); };
  auto em = [this, act](Shape s) { return Tensor::empty(s, act, device_); };
  auto ea = [this, act](Shape s) { return Tensor::empty(s, attention_dtype(act), device_); };
  Acts a;
  const auto packed_xn = [&](int g) {  // the group's packed x: xn in its first C columns, s·u after
    return Tensor::empty({n, (c.C + kGroupSize[g] * lora_r_ + 7) / 8 * 8}, DType::BF16, device_);
  };
  a.xn1_packed = pack_xn(0, act);
  a.xn2_packed = pack_xn(1, act);
  a.xn1 = share ? share->xn1 : a.xn1_packed ? packed_xn(0) : em({n, c.C});
  a.rstd1 = e({n});
  a.q = ea({n, c.H * c.D});
  a.k = ea({n, c.KVH * c.D});
  a.v = ea({n, c.KVH * c.D});
  if (c.qk_norm) {
    a.q_pre = e({n, c.H * c.D});
    a.k_pre = e({n, c.KVH * c.D});
    a.q_rstd = e({n * c.H});
    a.k_rstd = e({n * c.KVH});
  }
  a.att_packed = pack_att(act);
  a.att = a.att_packed ? Tensor::empty({n, (c.H * c.D + lora_r_ + 7) / 8 * 8}, DType::BF16, device_) : ea({n, c.H * c.D});
  a.lse = e({n, c.H});
  a.x2 = e({n, c.C});
  a.xn2 = share ? share->xn2 : a.xn2_packed ? packed_xn(1) : em({n, c.C});
  a.rstd2 = e({n});
  a.gate = em({n, c.F});
  a.up = em({n, c.F});
  a.h_packed = pack_h(act);
  a.h = share ? share->h
              : a.h_packed ? Tensor::empty({n, (c.F + lora_r_ + 7) / 8 * 8}, DType::BF16, device_) : em({n, c.F});
  for (int ti = 0; ti < kNumTargets; ++ti) {
    if (layers_[0].lin[static_cast<size_t>(ti)].has_lora) a.u[static_cast<size_t>(ti)] = e({n, lora_r_});
  }
  int members[kMaxLoraGroup];
  for (int g = 0; g < 2; ++g) {
    const int m = group_members(0, g, members);
    if (groups_ && m >= 2) a.ug[static_cast<size_t>(g)] = e({n, m * lora_r_});
  }
  return a;
}

void LlamaModel::linear_forward(Linear& lin, const Tensor& x, Tensor& y, Tensor& u, uint32_t seed,
                                const Tensor* residual, Tensor* x_packed) {
  if (x_packed && (!lin.has_lora || dropout_active_)) fail(ErrorCode::Internal, "linear_forward: a packed x off the packed path");
  if (lin.has_lora) {
    LoraLinearForwardArgs args{x_packed ? nullptr : &x, &lin.w, lin.bias.defined() ? &lin.bias : nullptr, &lin.lora.a,
                               &lin.lora.b, lora_scale_, &y, &u};
    args.x_packed = x_packed;
    args.u_unused = x_packed && su_kept_;  // the backward reads s·u from x_packed (layer_backward's su_intact_)
    args.stack_a = stack_a_;
    args.residual = residual;
    if (dropout_active_) return lora_dropout_forward(LoraDropoutForwardArgs{args, lora_dropout_, seed});
    if (lin.wb.defined()) {  // the kept [W | B] (prepare_wb): W copied into it by its first forward
      args.wb = &lin.wb;
      args.wb_has_w = lin.wb_has_w;
      // B (and A) written by this pass's pack_factors (a kept [W | B] with W in it then), or by an earlier forward
      // of the pass (its first, which copied W in, before a checkpointed recompute): the same factors either way
      args.factors_packed = factors_packed_ && lin.wb_has_w;
    }
    lora_linear_forward(args);
    if (lin.wb.defined()) lin.wb_has_w = true;
    return;
  }
  matmul(MatmulArgs{&x, &lin.w, false, true, &y});
  if (lin.bias.defined()) bias_add(BiasAddArgs{&y, &lin.bias});
  if (residual) add(AddArgs{&y, residual, &y});
}

void LlamaModel::linear_backward(Linear& lin, const Tensor& dy, const Tensor& x, const Tensor& u, Tensor* dx,
                                 bool accumulate_dx, bool accumulate_grads, Tensor& tmp, uint32_t seed,
                                 const Tensor* x_packed, Tensor* dy_packed) {
  if (x_packed && (!lin.has_lora || dropout_active_ || full_)) fail(ErrorCode::Internal, "linear_backward: a packed x off the packed path");
  if (lin.has_lora) {  // dx += inside the product when accumulating (no tmp, no add)
    LoraLinearBackwardArgs args{&dy, x_packed ? nullptr : &x, &lin.w, &lin.lora.a, &lin.lora.b, &u, lora_scale_, dx,
                                &lin.lora.da, &lin.lora.db, accumulate_grads, dx && accumulate_dx};
    args.x_packed = x_packed;
    args.su_packed = x_packed && su_intact_;  // s·u in x_packed as this layer's forward left it
    args.side_grads = side_grads_;            // (never with dropout)
    // (a bf16/f16 W only; lora_dropout's backward does not read it: it packs dy itself)
    args.dy_packed = lin.w.dtype() != DType::F32 ? dy_packed : nullptr;
    args.a_stacked = stack_a_;
    if (dropout_active_) {
      lora_dropout_backward(LoraDropoutBackwardArgs{args, lora_dropout_, seed});
    } else {
      if (lin.wb.defined()) args.wb = &lin.wb;  // as this pass's forward left it (B written there, unchanged since)
      lora_linear_backward(args);
    }
  } else if (dx) {
    Tensor& dst = accumulate_dx ? tmp : *dx;
    matmul(MatmulArgs{&dy, &lin.w, false, false, &dst});
    if (accumulate_dx) add(AddArgs{dx, &tmp, dx});
  }
  if (!full_) return;
  // Full mode: dW += dyᵀ·x ((OUT, N)·(N, IN)); dbias += Σ_rows dy as 1ᵀ·dy.
  Tensor gw = empty(lin.dw.shape());
  matmul(MatmulArgs{&dy, &x, true, false, &gw});
  add(AddArgs{&lin.dw, &gw, &lin.dw});
  if (lin.bias.defined()) {
    const int64_t n = dy.dim(0);
    Tensor ones_host = Tensor::empty({n, 1}, DType::F32);
    std::fill(ones_host.data_as<float>(), ones_host.data_as<float>() + n, 1.0f);
    Tensor ones = on_device(ones_host);
    Tensor gb = empty({1, lin.out});
    matmul(MatmulArgs{&ones, &dy, true, false, &gb});
    Tensor gbv = gb.reshape({lin.out});
    add(AddArgs{&lin.dbias, &gbv, &lin.dbias});
  }
}


// A flag of one pass (groups_ in logits and decode — run() sets it with dropout in its own scope —,
// factors_packed_, su_kept_): on as the pass starts, false again however it ends.
struct LlamaModel::PassFlag {
  bool& flag;
  PassFlag(bool& f, bool on) : flag(f) { flag = on; }
  ~PassFlag() { flag = false; }
  PassFlag(const PassFlag&) = delete;
  PassFlag& operator=(const PassFlag&) = delete;
};

int LlamaModel::group_members(int64_t l, int g, int* members) const {
  const LayerWeights& lw = layers_[static_cast<size_t>(l)];
  int m = 0;
  for (int j = 0; j < kGroupSize[g]; ++j) {
    const int t = kGroupTargets[g][j];
    if (lw.lin[static_cast<size_t>(t)].has_lora) members[m++] = t;
  }
  return m;
}

bool LlamaModel::grouped(int64_t l, int g, const Acts& a) const {
  const Tensor& ug = a.ug[static_cast<size_t>(g)];
  int members[kMaxLoraGroup];
  return grouped(l, g) && ug.defined() && ug.dim(1) == group_members(l, g, members) * lora_r_;
}

bool LlamaModel::grouped(int64_t l, int g) const {
  if (!groups_) return false;
  int members[kMaxLoraGroup];
  const int m = group_members(l, g, members);
  if (m < 2) return false;
  // On a GPU only with the group's kept matrix (prepare_wb): without it the op would copy every member's W into a
  // matrix of its own in the forward and again in the backward, where the per-linear path copies W once and
  // reads it in place in the backward. Decided once a pass (prepare_wb runs first), so forward and backward agree.
  const LayerWeights& lw = layers_[static_cast<size_t>(l)];
  if (device_ != Device::CPU && !lw.kept[static_cast<size_t>(g)].defined()) return false;
  // and with one weight dtype in the group (lora_group's members are all f32 or all bf16/f16)
  const bool f32 = lw.lin[static_cast<size_t>(members[0])].w.dtype() == DType::F32;
  for (int j = 1; j < m; ++j)
    if ((lw.lin[static_cast<size_t>(members[j])].w.dtype() == DType::F32) != f32) return false;
  return true;
}

bool LlamaModel::pack_h(DType act) const {
  return device_ != Device::CPU && act == DType::BF16 && !full_ && !dropout_active_ && has_lora() &&
         layers_[0].lin[kDown].has_lora && next_enabled(Next::SwigluPack);
}

bool LlamaModel::pack_att(DType act) const {
  return device_ != Device::CPU && attention_dtype(act) == DType::BF16 && !full_ && !dropout_active_ && has_lora() &&
         layers_[0].lin[kO].has_lora && next_enabled(Next::AttnPack);
}

bool LlamaModel::pack_xn(int g, DType act) const {
  if (device_ == Device::CPU || act != DType::BF16 || !groups_ || !next_enabled(Next::NormPack)) return false;
  int members[kMaxLoraGroup];
  if (group_members(0, g, members) != kGroupSize[g]) return false;  // a linear outside the group reads xn plain
  const LayerWeights& lw = layers_[0];
  if (!lw.kept[static_cast<size_t>(g)].defined()) return false;  // (grouped() wants it: else no group, no packed x)
  for (int j = 0; j < kGroupSize[g]; ++j)
    if (lw.lin[static_cast<size_t>(members[j])].w.dtype() == DType::F32) return false;
  return true;
}

void LlamaModel::norm_forward(const Tensor& x, const Tensor& w, Tensor& y, bool packed, Tensor& rstd) {
  RmsnormForwardArgs args{&x, &w, cfg_.eps, packed ? nullptr : &y, &rstd};
  args.y_packed = packed ? &y : nullptr;
  rmsnorm_forward(args);
}

bool LlamaModel::pack_dres() const {
  if (device_ == Device::CPU || full_ || dropout_active_ || !has_lora() || !next_enabled(Next::NormPack)) return false;
  const Linear &o = layers_[0].lin[kO], &down = layers_[0].lin[kDown];
  return (o.has_lora && o.w.dtype() != DType::F32) || (down.has_lora && down.w.dtype() != DType::F32);
}

bool LlamaModel::want_groups() const {
  return has_lora() && !full_ && !dropout_active_ && (device_ == Device::CPU || next_enabled(Next::LoraGroup));
}

void LlamaModel::group_forward(int64_t l, int g, const Tensor& x, Acts& a, Tensor* const* ys, Tensor* x_packed) {
  LayerWeights& lw = layers_[static_cast<size_t>(l)];
  if (!grouped(l, g, a)) {
    if (x_packed) fail(ErrorCode::Internal, "group_forward: a packed x without the grouped path");
    for (int j = 0; j < kGroupSize[g]; ++j) {
      const int t = kGroupTargets[g][j];
      linear_forward(lw.lin[static_cast<size_t>(t)], x, *ys[j], a.u[static_cast<size_t>(t)], dropout_seed(l, t));
    }
    return;
  }
  LoraGroupForwardArgs args;
  args.x = x_packed ? nullptr : &x;
  args.x_packed = x_packed;
  args.u_unused = x_packed && su_kept_;  // (as linear_forward's)
  args.scale = lora_scale_;
  args.u = &a.ug[static_cast<size_t>(g)];
  for (int j = 0; j < kGroupSize[g]; ++j) {
    const int t = kGroupTargets[g][j];
    Linear& lin = lw.lin[static_cast<size_t>(t)];
    if (!lin.has_lora) {  // not a member: its own product
      if (x_packed) fail(ErrorCode::Internal, "group_forward: a packed x with a linear outside the group");
      linear_forward(lin, x, *ys[j], a.u[static_cast<size_t>(t)], dropout_seed(l, t));
      continue;
    }
    const int i = args.m++;
    args.w[i] = &lin.w;
    args.bias[i] = lin.bias.defined() ? &lin.bias : nullptr;
    args.a[i] = &lin.lora.a;
    args.b[i] = &lin.lora.b;
    args.y[i] = ys[j];
  }
  Tensor& kept = lw.kept[static_cast<size_t>(g)];
  if (kept.defined()) {
    args.kept = &kept;
    args.kept_has_w = lw.kept_has_w[static_cast<size_t>(g)];
    args.factors_packed = factors_packed_ && args.kept_has_w;  // (as linear_forward's)
  }
  lora_group_forward(args);
  if (kept.defined()) lw.kept_has_w[static_cast<size_t>(g)] = true;
}

// lora_pack_factors' entries are the forward arguments group_forward and linear_forward build (the factors' part):
// each group the pass runs grouped whose kept matrix holds W, and each linear whose kept [W | B] does. Those whose
// kept matrix has no W yet (a pass's first) are left to their forward, which copies W in and writes them.
bool LlamaModel::pack_factors() {
  if (device_ == Device::CPU || !has_lora() || full_ || dropout_active_ || !next_enabled(Next::FactorPack)) return false;
  std::vector<LoraLinearForwardArgs> lins;
  std::vector<LoraGroupForwardArgs> groups;
  lins.reserve(layers_.size() * kNumTargets);  // (the args' addresses go into the op's lists: no reallocation)
  groups.reserve(layers_.size() * 2);
  for (size_t l = 0; l < layers_.size(); ++l) {
    LayerWeights& lw = layers_[l];
    for (int g = 0; g < 2; ++g) {
      Tensor& kept = lw.kept[static_cast<size_t>(g)];
      if (!kept.defined() || !lw.kept_has_w[static_cast<size_t>(g)] || !grouped(static_cast<int64_t>(l), g)) continue;
      LoraGroupForwardArgs args;
      for (int j = 0; j < kGroupSize[g]; ++j) {
        Linear& lin = lw.lin[static_cast<size_t>(kGroupTargets[g][j])];
        if (!lin.has_lora) continue;
        const int i = args.m++;
        args.w[i] = &lin.w;
        args.a[i] = &lin.lora.a;
        args.b[i] = &lin.lora.b;
      }
      args.kept = &kept;
      args.kept_has_w = true;
      groups.push_back(args);
    }
    for (Linear& lin : lw.lin) {
      if (!lin.has_lora || !lin.wb.defined() || !lin.wb_has_w) continue;
      LoraLinearForwardArgs args{nullptr, &lin.w, nullptr, &lin.lora.a, &lin.lora.b, lora_scale_, nullptr, nullptr};
      args.wb = &lin.wb;
      args.wb_has_w = true;
      args.stack_a = stack_a_;  // (as linear_forward's: A below W in a pass with a backward)
      lins.push_back(args);
    }
  }
  LoraPackFactorsArgs all;
  for (const LoraLinearForwardArgs& a : lins) all.linears.push_back(&a);
  for (const LoraGroupForwardArgs& a : groups) all.groups.push_back(&a);
  lora_pack_factors(all);
  return true;
}

void LlamaModel::group_backward(int64_t l, int g, const Tensor& x, Acts& a, const Tensor* const* dys, Tensor* dx,
                                bool accumulate, LlamaScratch& s, Tensor* dy_packed, const Tensor* x_packed) {
  LayerWeights& lw = layers_[static_cast<size_t>(l)];
  if (!grouped(l, g, a)) {
    if (!dys || x_packed) fail(ErrorCode::Internal, "group_backward: a packed dy or x without the grouped path");
    for (int j = 0; j < kGroupSize[g]; ++j) {
      const int t = kGroupTargets[g][j];
      linear_backward(lw.lin[static_cast<size_t>(t)], *dys[j], x, a.u[static_cast<size_t>(t)], dx, j > 0, accumulate,
                      s.tmp, dropout_seed(l, t));
    }
    return;
  }
  LoraGroupBackwardArgs args;
  args.x = x_packed ? nullptr : &x;
  args.x_packed = x_packed;
  args.su_packed = x_packed && su_intact_;  // (as linear_backward's)
  args.side_grads = side_grads_;
  args.scale = lora_scale_;
  args.u = &a.ug[static_cast<size_t>(g)];
  args.dx = dx;
  args.accumulate = accumulate;
  for (int j = 0; j < kGroupSize[g]; ++j) {
    Linear& lin = lw.lin[static_cast<size_t>(kGroupTargets[g][j])];
    if (!lin.has_lora) continue;
    const int i = args.m++;
    args.dy[i] = dy_packed ? nullptr : dys[j];
    args.w[i] = &lin.w;
    args.a[i] = &lin.lora.a;
    args.b[i] = &lin.lora.b;
    args.da[i] = &lin.lora.da;
    args.db[i] = &lin.lora.db;
  }
  if (lw.kept[static_cast<size_t>(g)].defined()) args.kept = &lw.kept[static_cast<size_t>(g)];
  args.dy_packed = dy_packed;
  // in the targets' order: the group where its first member stands, dx written by whichever comes first
  bool written = false, group_done = false;
  for (int j = 0; j < kGroupSize[g]; ++j) {
    const int t = kGroupTargets[g][j];
    Linear& lin = lw.lin[static_cast<size_t>(t)];
    if (lin.has_lora) {
      if (group_done) continue;
      args.accumulate_dx = dx && written;
      lora_group_backward(args);
      group_done = true;
    } else {
      if (!dys || x_packed) fail(ErrorCode::Internal, "group_backward: a packed dy or x with a linear outside the group");
      linear_backward(lin, *dys[j], x, a.u[static_cast<size_t>(t)], dx, written, accumulate, s.tmp, dropout_seed(l, t));
    }
    written = true;
  }
}

void LlamaModel::layer_forward(int64_t l, const Tensor& x, Acts& a, Tensor& x_out, const ModelInputs& in,
                               int64_t cache_start) {
  const LlamaConfig& c = cfg_;
  LayerWeights& lw = layers_[static_cast<size_t>(l)];
  auto& lin = lw.lin;
  const int64_t n = x.dim(0);
  norm_forward(x, lw.ln1, a.xn1, a.xn1_packed, a.rstd1);
  {
    Tensor* ys[3] = {c.qk_norm ? &a.q_pre : &a.q, c.qk_norm ? &a.k_pre : &a.k, &a.v};
    group_forward(l, 0, a.xn1, a, ys, a.xn1_packed ? &a.xn1 : nullptr);
  }
  if (c.qk_norm) {
    Tensor qp = a.q_pre.reshape({n * c.H, c.D}), qo = a.q.reshape({n * c.H, c.D});
    Tensor kp = a.k_pre.reshape({n * c.KVH, c.D}), ko = a.k.reshape({n * c.KVH, c.D});
    rmsnorm_forward(RmsnormForwardArgs{&qp, &lw.q_norm, c.eps, &qo, &a.q_rstd});
    rmsnorm_forward(RmsnormForwardArgs{&kp, &lw.k_norm, c.eps, &ko, &a.k_rstd});
  }
  Tensor q3 = a.q.reshape({n, c.H, c.D}), k3 = a.k.reshape({n, c.KVH, c.D}), v3 = a.v.reshape({n, c.KVH, c.D});
  // att_packed: the attention writes att straight into o_proj's packed x (attn_pack), which o_proj reads in place
  Tensor att3 = a.att_packed ? Tensor() : a.att.reshape({n, c.H, c.D});
  const Tensor* pos_host = in.host ? in.host->positions : nullptr;
  rope_qk(false, q3, k3, in.positions, pos_host);
  if (cache_start >= 0) {
    if (a.att_packed) fail(ErrorCode::Internal, "layer_forward: a packed attention output while decoding");
    attention_decode(AttentionDecodeArgs{&q3, &k3, &v3, &k_cache_[static_cast<size_t>(l)], &v_cache_[static_cast<size_t>(l)],
                                         cache_start, attn_scale(), &att3, c.sliding_window});
  } else {
    AttentionForwardArgs fa{&q3, &k3, &v3, in.cu_seqlens, attn_scale(), a.att_packed ? nullptr : &att3, &a.lse,
                            c.sliding_window, in.seg_bounds};
    fa.out_packed = a.att_packed ? &a.att : nullptr;
    attention_forward(fa);
  }
  // x2 = x + o_proj(att)
  linear_forward(lin[kO], a.att, a.x2, a.u[kO], dropout_seed(l, kO), &x, a.att_packed ? &a.att : nullptr);
  norm_forward(a.x2, lw.ln2, a.xn2, a.xn2_packed, a.rstd2);
  {
    Tensor* ys[2] = {&a.gate, &a.up};
    group_forward(l, 1, a.xn2, a, ys, a.xn2_packed ? &a.xn2 : nullptr);
  }
  swiglu_forward(a.h_packed ? SwigluForwardArgs{&a.gate, &a.up, nullptr, &a.h} : SwigluForwardArgs{&a.gate, &a.up, &a.h});
  // x_out = x2 + down_proj(h)
  linear_forward(lin[kDown], a.h, x_out, a.u[kDown], dropout_seed(l, kDown), &a.x2, a.h_packed ? &a.h : nullptr);
}

// q and k (or their gradients) rotated in place: one rope call for both with INSTILL_CUDA_NEXT=rope_qk (ops/rope.h's
// x2: the same results), else one each. packed (dqkv_pack): rotated into the q/k/v group's packed dy instead, q in its
// first H·D columns and k in the next KVH·D.
void LlamaModel::rope_qk(bool backward, Tensor& q, Tensor& k, const Tensor* positions, const Tensor* positions_host,
                         Tensor* packed) {
  RopeArgs args{&q, positions, &inv_freq_, packed ? nullptr : &q, positions_host};
  args.out_packed = packed;
  args.out2_col = cfg_.H * cfg_.D;
  const auto run = [&](const RopeArgs& a) { backward ? rope_backward(a) : rope_forward(a); };
  if (next_enabled(Next::RopeQK)) {
    args.x2 = &k;
    args.out2 = packed ? nullptr : &k;
    return run(args);
  }
  run(args);
  RopeArgs second{&k, positions, &inv_freq_, packed ? nullptr : &k, positions_host};
  second.out_packed = packed;
  second.out_col = cfg_.H * cfg_.D;
  run(second);
}

void LlamaModel::layer_backward(int64_t l, const Tensor& x, Acts& a, Tensor& dres, const ModelInputs& in,
                                bool accumulate, bool recompute, LlamaScratch& s) {
  const LlamaConfig& c = cfg_;
  LayerWeights& lw = layers_[static_cast<size_t>(l)];
  auto& lin = lw.lin;
  const int64_t n = x.dim(0);
  // The packed x buffers (xn1, xn2, h) still hold this layer's s·u where its forward wrote them: yes with the layer's
  // own activations, or a checkpointed layer's forward just run again; no where the layers share them (recomputed
  // below: only their x columns)
  su_intact_ = !recompute;
  if (recompute) {
    norm_forward(a.x2, lw.ln2, a.xn2, a.xn2_packed, a.rstd2);
    swiglu_forward(a.h_packed ? SwigluForwardArgs{&a.gate, &a.up, nullptr, &a.h} : SwigluForwardArgs{&a.gate, &a.up, &a.h});
  }
  // MLP: dres is d(x_out); the residual passes it through to x2 unchanged.
  // norm_pack: down's packed dy, written by the norm below this layer's (or the final norm), and o's, written by the
  // norm between them: one buffer, or two with side_grads. There a LoRA backward's dA and dB, queued on the side
  // stream, may still read its packed dy (and packed x) after it returns; before each write of one of the four packed
  // dy buffers (dres_packed, dres_packed_o, dgu, dqkv) the device waits for the side work of the backward that read
  // it last (s.side_*): the same layer's down for dres_packed, the layer above's o, gate/up and q/k/v for the others,
  // a layer's worth of other work ago or more.
  const bool side = side_grads_;
  Tensor* const dres_packed = s.dres_packed.defined() ? &s.dres_packed : nullptr;
  Tensor* const dres_packed_o = s.dres_packed_o.defined() ? &s.dres_packed_o : dres_packed;
  linear_backward(lin[kDown], dres, a.h, a.u[kDown], &s.dh, false, accumulate, s.tmp, dropout_seed(l, kDown),
                  a.h_packed ? &a.h : nullptr, dres_packed);
  if (side) s.side_down = side_work_mark(device_);
  if (side && s.dgu.defined()) join_side_work(device_, s.side_gu);  // (swiglu rewrites s.dgu)
  int mlp_members[kMaxLoraGroup];
  if (s.dgu.defined() && grouped(l, 1, a) && group_members(l, 1, mlp_members) == 2) {
    // swiglu_pack: dgate and dup straight into the group's packed dy, where lora_group reads them
    swiglu_backward(SwigluBackwardArgs{&s.dh, &a.gate, &a.up, nullptr, nullptr, &s.dgu});
    group_backward(l, 1, a.xn2, a, nullptr, &s.dxn, accumulate, s, &s.dgu, a.xn2_packed ? &a.xn2 : nullptr);
  } else {
    swiglu_backward(SwigluBackwardArgs{&s.dh, &a.gate, &a.up, &s.dgate, &s.dup});
    const Tensor* dys[2] = {&s.dgate, &s.dup};
    group_backward(l, 1, a.xn2, a, dys, &s.dxn, accumulate, s, nullptr, a.xn2_packed ? &a.xn2 : nullptr);
  }
  if (side) s.side_gu = side_work_mark(device_);
  {
    if (side && dres_packed_o) join_side_work(device_, s.side_o);  // (the norm rewrites o's packed dy)
    RmsnormBackwardArgs nb{&s.dxn, &a.x2, &lw.ln2, &a.rstd2, &dres, true, full_ ? &lw.dln2 : nullptr};
    nb.dx_packed = dres_packed_o;
    rmsnorm_backward(nb);
  }
  // Attention: dres is now d(x2). The first layer's input gradient reaches only the embedding, which changes only in
  // full fine-tuning: otherwise the attention's backward serves only q/k/v's adapters, and with none of them o_proj
  // makes no dx and the layer's backward ends here (the q/k/v products below make no dx in any case: dxn)
  const bool first = l == 0 && !full_;
  const bool qkv_lora = lin[kQ].has_lora || lin[kK].has_lora || lin[kV].has_lora;
  linear_backward(lin[kO], dres, a.att, a.u[kO], first && !qkv_lora ? nullptr : &s.datt, false, accumulate, s.tmp,
                  dropout_seed(l, kO), a.att_packed ? &a.att : nullptr, dres_packed_o);
  if (side) s.side_o = side_work_mark(device_);
  if (first && !qkv_lora) return;
  Tensor q3 = a.q.reshape({n, c.H, c.D}), k3 = a.k.reshape({n, c.KVH, c.D}), v3 = a.v.reshape({n, c.KVH, c.D});
  Tensor att3 = a.att_packed ? Tensor() : a.att.reshape({n, c.H, c.D}), datt3 = s.datt.reshape({n, c.H, c.D});
  Tensor dq3 = s.dq.reshape({n, c.H, c.D}), dk3 = s.dk.reshape({n, c.KVH, c.D}), dv3 = s.dv.reshape({n, c.KVH, c.D});
  // dqkv_pack: dv, and dq, dk as rope rotates them, straight into the q/k/v group's packed dy (its members' columns)
  int qkv_members[kMaxLoraGroup];
  // (s.dqkv only with bf16 attention activations, so never with Qwen3's q/k norm, whose backward follows rope's)
  Tensor* const dqkv = s.dqkv.defined() && grouped(l, 0, a) && group_members(l, 0, qkv_members) == 3 ? &s.dqkv : nullptr;
  AttentionBackwardArgs ba{&datt3, &q3, &k3, &v3, a.att_packed ? nullptr : &att3, &a.lse, in.cu_seqlens, attn_scale(),
                           &dq3, &dk3, dqkv ? nullptr : &dv3, c.sliding_window, in.seg_bounds};
  ba.out_packed = a.att_packed ? &a.att : nullptr;
  ba.dv_packed = dqkv;
  ba.dv_col = (c.H + c.KVH) * c.D;
  if (side && dqkv) join_side_work(device_, s.side_qkv);  // (the attention and rope rewrite s.dqkv)
  attention_backward(ba);
  const Tensor* pos_host = in.host ? in.host->positions : nullptr;
  rope_qk(true, dq3, dk3, in.positions, pos_host, dqkv);
  if (c.qk_norm) {
    Tensor qp = a.q_pre.reshape({n * c.H, c.D}), dq2 = s.dq.reshape({n * c.H, c.D});
    Tensor kp = a.k_pre.reshape({n * c.KVH, c.D}), dk2 = s.dk.reshape({n * c.KVH, c.D});
    rmsnorm_backward(RmsnormBackwardArgs{&dq2, &qp, &lw.q_norm, &a.q_rstd, &dq2, false, full_ ? &lw.dq_norm : nullptr});
    rmsnorm_backward(RmsnormBackwardArgs{&dk2, &kp, &lw.k_norm, &a.k_rstd, &dk2, false, full_ ? &lw.dk_norm : nullptr});
  }
  if (recompute) norm_forward(x, lw.ln1, a.xn1, a.xn1_packed, a.rstd1);
  Tensor* const dxn = first ? nullptr : &s.dxn;  // (see `first` above: nor has the norm below them a backward)
  if (dqkv) {
    group_backward(l, 0, a.xn1, a, nullptr, dxn, accumulate, s, dqkv, a.xn1_packed ? &a.xn1 : nullptr);
  } else {
    const Tensor* dys[3] = {&s.dq, &s.dk, &s.dv};
    group_backward(l, 0, a.xn1, a, dys, dxn, accumulate, s, nullptr, a.xn1_packed ? &a.xn1 : nullptr);
  }
  if (side) s.side_qkv = side_work_mark(device_);
  if (!dxn) return;
  if (side && dres_packed) join_side_work(device_, s.side_down);  // (the norm rewrites down's packed dy, for below)
  RmsnormBackwardArgs nb{&s.dxn, &x, &lw.ln1, &a.rstd1, &dres, true, full_ ? &lw.dln1 : nullptr};
  nb.dx_packed = l > 0 ? dres_packed : nullptr;  // for the layer below's down_proj (layer 0 has none)
  rmsnorm_backward(nb);
}

namespace {
void check_inputs(const ModelInputs& in, bool need_targets, int64_t vocab) {
  const Tensor& ids = need(in.ids, "ids");
  for (const Tensor* t : {in.ids, in.positions, in.cu_seqlens, in.targets})
    if (t && t->defined()) need_same_device(*t, "model inputs (ids, positions, cu_seqlens, targets)", Device::CPU);
  need_dtype(ids, "ids", {DType::I32});
  need_ndim(ids, "ids", 1);
  const int64_t n = ids.dim(0);
  if (n == 0) fail(ErrorCode::Shape, "a batch needs at least one token");
  const Tensor& pos = need(in.positions, "positions");
  need_dtype(pos, "positions", {DType::I32});
  need_shape(pos, "positions", {n}, "(N,) like ids");
  const Tensor& cu = need(in.cu_seqlens, "cu_seqlens");
  need_dtype(cu, "cu_seqlens", {DType::I32});
  need_ndim(cu, "cu_seqlens", 1);
  const int32_t* cp = cu.data_as<int32_t>();
  const int64_t s1 = cu.dim(0);
  if (s1 < 1 || cp[0] != 0 || cp[s1 - 1] != n) fail(ErrorCode::Arg, "'cu_seqlens' must start at 0 and end at N = ", n);
  for (int64_t i = 1; i < s1; ++i)
    if (cp[i] < cp[i - 1]) fail(ErrorCode::Arg, "'cu_seqlens' must not decrease (index ", i, ")");
  if (need_targets) {
    const Tensor& t = need(in.targets, "targets");
    need_dtype(t, "targets", {DType::I32});
    need_shape(t, "targets", {n}, "(N,) like ids");
    const int32_t* tp = t.data_as<int32_t>();
    for (int64_t i = 0; i < n; ++i) {
      if (tp[i] != kIgnoreIndex && (tp[i] < 0 || tp[i] >= vocab)) {
        fail(ErrorCode::Range, "target ", tp[i], " at index ", i, " is outside [0, ", vocab, ") and is not -100");
      }
    }
  }
}
}  // namespace

// The token inputs (validated on the host) on the model's device; `keep` owns the copies.
// cu_seqlens stays on the host, where attention validates it; on a GPU the attention's
// per-token segment bounds are built here once per pass (seg_bounds, ops/attention.h)
// instead of in each of its 2·L calls.
ModelInputs LlamaModel::inputs_on_device(const ModelInputs& in, std::array<Tensor, 5>& keep) const {
  keep[0] = on_device(*in.ids);
  keep[1] = on_device(*in.positions);
  keep[2] = *in.cu_seqlens;
  if (in.targets) keep[3] = on_device(*in.targets);
  ModelInputs out{&keep[0], &keep[1], &keep[2], in.targets ? &keep[3] : nullptr};
  out.host = &in;  // the caller's host tensors outlive the pass (on the CPU they are the same data)
  if (device_ != Device::CPU) {
    const int64_t n = in.ids->dim(0), s = in.cu_seqlens->dim(0) - 1;
    const int32_t* cu = in.cu_seqlens->data_as<int32_t>();
    Tensor bounds = Tensor::empty({2, n}, DType::I32);
    int32_t* b = bounds.data_as<int32_t>();
    for (int64_t si = 0; si < s; ++si)
      for (int32_t i = cu[si]; i < cu[si + 1]; ++i) {
        b[i] = cu[si];
        b[n + i] = cu[si + 1];
      }
    keep[4] = on_device(bounds);
    out.seg_bounds = &keep[4];
  }
  return out;
}

CrossEntropyResult LlamaModel::loss_and_grads(const ModelInputs& in, double normalizer, bool accumulate,
                                              uint32_t step_seed) {
  return run(in, normalizer, accumulate, step_seed, true);
}

CrossEntropyResult LlamaModel::loss(const ModelInputs& in, double normalizer) {
  return run(in, normalizer, false, 0, false);
}

CrossEntropyResult LlamaModel::run(const ModelInputs& host_in, double normalizer, bool accumulate, uint32_t step_seed,
                                   bool want_grads) {
  check_complete();
  check_inputs(host_in, true, cfg_.V);
  std::array<Tensor, 5> keep;
  const ModelInputs in = inputs_on_device(host_in, keep);
  // Dropout is on for this call only (also if it throws), and only when gradients are computed.
  // stack_a_: each adapted linear's forward also leaves A where its backward reads it (ops/lora_linear.h),
  // since no A changes within the pass.
  struct DropoutScope {
    LlamaModel& m;
    DropoutScope(LlamaModel& mm, uint32_t seed, bool on) : m(mm) {
      m.dropout_active_ = on && m.lora_dropout_ > 0.0f && m.has_lora();
      m.step_seed_ = seed;
      m.stack_a_ = on && m.has_lora() && !m.dropout_active_;
      m.groups_ = m.want_groups();
    }
    ~DropoutScope() {
      m.dropout_active_ = false;
      m.stack_a_ = false;
      m.groups_ = false;
    }
  } scope(*this, step_seed, want_grads);
  const LlamaConfig& c = cfg_;
  const int64_t n = in.ids->dim(0);
  std::vector<Tensor> xs(static_cast<size_t>(c.L + 1));
  for (auto& t : xs) t = empty({n, c.C});
  embedding_forward(EmbeddingForwardArgs{in.ids, &embed_, &xs[0], in.host ? in.host->ids : nullptr});
  // With bf16 activations (act_dtype(): a GPU's default, set_activations(), INSTILL_BF16_ACTIVATIONS) the norm
  // outputs and the MLP's (N, F) activations and gradients are bf16: what only bf16 products read, at half the
  // bytes (lora_linear takes them as they are).
  const DType act = act_dtype();
  // Without checkpointing each layer keeps its activations for the backward, sharing xn1, xn2 and h with the
  // others or not (share_layer_acts()). Checkpointing recomputes the whole layer just before its backward,
  // so nothing is recomputed twice.
  prepare_wb(n, act);
  const PassFlag factors(factors_packed_, pack_factors());
  const bool share = !checkpointing_ && share_layer_acts(n, act);
  // A backward that reads s·u from the layers' packed x (su_intact_ in layer_backward: not where they share it), so
  // the forwards into a packed x need not write u (u_unused)
  const PassFlag su_scope(su_kept_, want_grads && (has_lora() || full_) && !share);
  std::vector<Acts> acts(checkpointing_ ? 1 : static_cast<size_t>(c.L));
  for (size_t i = 0; i < acts.size(); ++i) acts[i] = make_acts(n, i && share ? &acts[0] : nullptr, act);
  for (int64_t l = 0; l < c.L; ++l) {
    layer_forward(l, xs[static_cast<size_t>(l)], acts[checkpointing_ ? 0 : static_cast<size_t>(l)],
                  xs[static_cast<size_t>(l + 1)], in);
  }
  Tensor xf = empty({n, c.C}), rstdf = empty({n});
  rmsnorm_forward(RmsnormForwardArgs{&xs[static_cast<size_t>(c.L)], &norm_, c.eps, &xf, &rstdf});
  const bool backward = want_grads && (has_lora() || full_);
  if (backward && full_ && !accumulate) zero_grads();
  Tensor dxf = backward ? empty({n, c.C}) : Tensor();
  LinearCrossEntropyArgs ce{};
  ce.h = &xf;
  ce.w = &head();
  ce.targets = in.targets;
  ce.targets_host = in.host ? in.host->targets : nullptr;
  ce.ignore_index = kIgnoreIndex;
  ce.normalizer = normalizer;
  ce.dh = backward ? &dxf : nullptr;
  ce.dw = backward && full_ ? (cfg_.tied ? &dembed_ : &dlm_head_) : nullptr;  // tied: the head's grad adds into the embedding's
  ce.accumulate_dw = true;
  CrossEntropyResult res = linear_cross_entropy(ce);
  if (!backward) return res;
  xf = Tensor();
  // INSTILL_CUDA_NEXT=side_grads: LoRA's dA and dB behind the rest of the backward, on the side stream; the device
  // waits for them before anything after the pass (the optimizer, a read of the gradients), also where it throws
  const PassFlag side(side_grads_, device_ != Device::CPU && next_enabled(Next::SideGrads) && has_lora() &&
                                       !checkpointing_ && !share && !dropout_active_);
  struct SideJoin {
    Device d;
    bool on;
    ~SideJoin() {
      if (!on) return;
      try {
        join_side_work(d);
      } catch (...) {  // (a failed wait shows again at the next sync)
      }
    }
  } side_join{device_, side_grads_};
  Tensor dres = empty({n, c.C});
  // norm_pack: every norm backward that writes dres also rounds it into o/down's packed dy, which their backward
  // then reads instead of packing dres itself
  Tensor dres_packed;
  if (pack_dres()) dres_packed = Tensor::empty({n, (c.C + lora_r_ + 7) / 8 * 8}, DType::BF16, device_);
  RmsnormBackwardArgs fb{&dxf, &xs[static_cast<size_t>(c.L)], &norm_, &rstdf, &dres, false, full_ ? &dnorm_ : nullptr};
  fb.dx_packed = dres_packed.defined() ? &dres_packed : nullptr;
  rmsnorm_backward(fb);
  dxf = Tensor();
  LlamaScratch s;
  s.dres_packed = dres_packed;
  if (side_grads_ && dres_packed.defined()) s.dres_packed_o = Tensor::empty(dres_packed.shape(), DType::BF16, device_);
  s.dxn = empty({n, c.C});
  s.tmp = empty({n, c.C});
  s.dh = Tensor::empty({n, c.F}, act, device_);
  s.dgate = Tensor::empty({n, c.F}, act, device_);
  s.dup = Tensor::empty({n, c.F}, act, device_);
  if (device_ != Device::CPU && groups_ && next_enabled(Next::SwigluPack) && layers_[0].lin[kGate].has_lora &&
      layers_[0].lin[kUp].has_lora && layers_[0].kept[1].defined()) {  // (grouped() wants the kept matrix too)
    s.dgu = Tensor::empty({n, (2 * c.F + 2 * lora_r_ + 7) / 8 * 8}, DType::BF16, device_);
  }
  const DType at = attention_dtype(act);
  if (device_ != Device::CPU && at == DType::BF16 && groups_ && next_enabled(Next::DqkvPack) && layers_[0].lin[kQ].has_lora &&
      layers_[0].lin[kK].has_lora && layers_[0].lin[kV].has_lora && layers_[0].kept[0].defined()) {
    s.dqkv = Tensor::empty({n, ((c.H + 2 * c.KVH) * c.D + 3 * lora_r_ + 7) / 8 * 8}, DType::BF16, device_);
  }
  s.datt = Tensor::empty({n, c.H * c.D}, at, device_);
  s.dq = Tensor::empty({n, c.H * c.D}, at, device_);
  s.dk = Tensor::empty({n, c.KVH * c.D}, at, device_);
  s.dv = Tensor::empty({n, c.KVH * c.D}, at, device_);
  for (int64_t l = c.L - 1; l >= 0; --l) {
    Acts& a = acts[checkpointing_ ? 0 : static_cast<size_t>(l)];
    if (checkpointing_) layer_forward(l, xs[static_cast<size_t>(l)], a, s.tmp, in);
    layer_backward(l, xs[static_cast<size_t>(l)], a, dres, in, accumulate, share, s);
  }
  if (side_grads_) join_side_work(device_);
  if (full_) embedding_backward(EmbeddingBackwardArgs{&dres, in.ids, &dembed_, in.host ? in.host->ids : nullptr});
  return res;
}

Tensor LlamaModel::logits(const ModelInputs& host_in, bool last_only) {
  check_complete();
  check_inputs(host_in, false, cfg_.V);
  std::array<Tensor, 5> keep;
  const ModelInputs in = inputs_on_device(host_in, keep);
  const LlamaConfig& c = cfg_;
  const int64_t n = in.ids->dim(0);
  const PassFlag groups(groups_, want_groups());  // grouped as in training passes: the same kept matrices
  prepare_wb(n, DType::F32);
  const PassFlag factors(factors_packed_, pack_factors());
  Tensor x = empty({n, c.C}), y = empty({n, c.C});
  embedding_forward(EmbeddingForwardArgs{in.ids, &embed_, &x, in.host ? in.host->ids : nullptr});
  Acts a = make_acts(n, nullptr);
  for (int64_t l = 0; l < c.L; ++l) {
    layer_forward(l, x, a, y, in);
    std::swap(x, y);
  }
  Tensor rstd = empty({n});
  rmsnorm_forward(RmsnormForwardArgs{&x, &norm_, c.eps, &y, &rstd});
  Tensor rows = y;
  if (last_only) {
    const int32_t* cu = host_in.cu_seqlens->data_as<int32_t>();
    const int64_t s = host_in.cu_seqlens->dim(0) - 1;
    std::vector<int32_t> last;
    for (int64_t i = 0; i < s; ++i)
      if (cu[i + 1] > cu[i]) last.push_back(cu[i + 1] - 1);
    Tensor idx_host = Tensor::empty({static_cast<int64_t>(last.size())}, DType::I32);
    for (size_t i = 0; i < last.size(); ++i) idx_host.data_as<int32_t>()[i] = last[i];
    Tensor idx = on_device(idx_host);
    rows = empty({idx.dim(0), c.C});
    embedding_forward(EmbeddingForwardArgs{&idx, &y, &rows, &idx_host});  // a row gather
  }
  Tensor out = empty({rows.dim(0), c.V});
  matmul(MatmulArgs{&rows, &head(), false, true, &out});
  if (device_ == Device::CPU) return out;
  Tensor host = Tensor::empty(out.shape(), DType::F32);  // logits are read on the host (eval, sampling)
  copy_bytes(host.data(), Device::CPU, out.data(), device_, out.nbytes());
  return host;
}

void LlamaModel::decode_reset(int64_t max_len) {
  if (max_len < 1) fail(ErrorCode::Arg, "KV cache length must be >= 1, got ", max_len);
  const LlamaConfig& c = cfg_;
  k_cache_.assign(static_cast<size_t>(c.L), Tensor());
  v_cache_.assign(static_cast<size_t>(c.L), Tensor());
  for (int64_t l = 0; l < c.L; ++l) {
    k_cache_[static_cast<size_t>(l)] = empty({max_len, c.KVH, c.D});
    v_cache_[static_cast<size_t>(l)] = empty({max_len, c.KVH, c.D});
  }
  cache_len_ = 0;
}

Tensor LlamaModel::decode(const Tensor& host_ids) {
  check_complete();
  if (k_cache_.empty()) fail(ErrorCode::Arg, "decode: no KV cache (call decode_reset first)");
  need_same_device(host_ids, "ids", Device::CPU);
  const Tensor ids = on_device(host_ids);
  need_dtype(ids, "ids", {DType::I32});
  need_ndim(ids, "ids", 1);
  const LlamaConfig& c = cfg_;
  const int64_t n = ids.dim(0), start = cache_len_;
  if (n == 0) fail(ErrorCode::Shape, "decode needs at least one token");
  if (start + n > k_cache_[0].dim(0)) {
    fail(ErrorCode::Range, "KV cache holds ", k_cache_[0].dim(0), " tokens; cannot add ", n, " after ", start);
  }
  Tensor pos_host = Tensor::empty({n}, DType::I32);
  for (int64_t i = 0; i < n; ++i) pos_host.data_as<int32_t>()[i] = static_cast<int32_t>(start + i);
  const Tensor pos = on_device(pos_host);
  ModelInputs host_in{&host_ids, &pos_host, nullptr, nullptr};
  ModelInputs in{&ids, &pos, nullptr, nullptr};
  in.host = &host_in;
  const PassFlag groups(groups_, want_groups());
  prepare_wb(n, DType::F32);
  const PassFlag factors(factors_packed_, pack_factors());
  Tensor x = empty({n, c.C}), y = empty({n, c.C});
  embedding_forward(EmbeddingForwardArgs{&ids, &embed_, &x, &host_ids});
  Acts a = make_acts(n, nullptr);
  for (int64_t l = 0; l < c.L; ++l) {
    layer_forward(l, x, a, y, in, start);
    std::swap(x, y);
  }
  cache_len_ = start + n;
  Tensor last_host = Tensor::empty({1}, DType::I32);
  last_host.data_as<int32_t>()[0] = static_cast<int32_t>(n - 1);
  const Tensor last = on_device(last_host);
  Tensor row = empty({1, c.C}), rowf = empty({1, c.C});
  embedding_forward(EmbeddingForwardArgs{&last, &x, &row, &last_host});  // a row gather
  Tensor rstd = empty({1});
  rmsnorm_forward(RmsnormForwardArgs{&row, &norm_, c.eps, &rowf, &rstd});
  Tensor out = empty({1, c.V});
  matmul(MatmulArgs{&rowf, &head(), false, true, &out});
  if (device_ == Device::CPU) return out;
  Tensor host = Tensor::empty(out.shape(), DType::F32);  // sampling runs on the host
  copy_bytes(host.data(), Device::CPU, out.data(), device_, out.nbytes());
  return host;
}

void LlamaModel::zero_grads() {
  if (full_) {
    for (const WeightRef& r : weight_refs())
      if (r.g->defined() && r.g->numel()) fill_bytes(r.g->data(), device_, 0, r.g->nbytes());
    return;
  }
  for (auto& lw : layers_)
    for (auto& lin : lw.lin)
      if (lin.has_lora) {
        lin.lora.da = zeros(lin.lora.a.shape());
        lin.lora.db = zeros(lin.lora.b.shape());
      }
}

std::vector<LlamaModel::TrainableRef> LlamaModel::trainables() {
  std::vector<TrainableRef> out;
  if (full_) {
    const std::vector<WeightRef> refs = weight_refs();
    full_m_.resize(refs.size());
    full_v_.resize(refs.size());
    for (size_t i = 0; i < refs.size(); ++i) out.push_back({refs[i].w, refs[i].g, &full_m_[i], &full_v_[i]});
    return out;
  }
  if (!has_lora()) fail(ErrorCode::Arg, "the model trains nothing: add LoRA adapters (addLora) or turn on full fine-tuning");
  for (auto& lw : layers_)
    for (auto& lin : lw.lin) {
      if (!lin.has_lora) continue;
      LoraParam& p = lin.lora;
      out.push_back({&p.a, &p.da, &p.ma, &p.va});
      out.push_back({&p.b, &p.db, &p.mb, &p.vb});
    }
  return out;
}

int64_t LlamaModel::trainable_count() { return static_cast<int64_t>(trainables().size()); }

Tensor& LlamaModel::moment(int64_t index, int which) {
  std::vector<TrainableRef> ts = trainables();
  if (index < 0 || index >= static_cast<int64_t>(ts.size()))
    fail(ErrorCode::Arg, "trainable tensor ", index, " out of range [0, ", ts.size(), ")");
  if (which != 0 && which != 1) fail(ErrorCode::Arg, "moment must be 0 (m) or 1 (v), got ", which);
  const TrainableRef& t = ts[static_cast<size_t>(index)];
  Tensor& mom = which == 0 ? *t.m : *t.v;
  if (!mom.defined()) mom = zeros(t.p->shape());
  return mom;
}

double LlamaModel::optimizer_step(double lr, double beta1, double beta2, double eps, double weight_decay,
                                  double max_grad_norm, int64_t step) {
  if (!(max_grad_norm >= 0) || !std::isfinite(max_grad_norm))
    fail(ErrorCode::Arg, "'maxGradNorm' must be a finite number >= 0 (0: no clipping), got ", max_grad_norm);
  std::vector<TrainableRef> ts = trainables();
  std::vector<const Tensor*> grads;
  for (const TrainableRef& t : ts) grads.push_back(t.g);
  const double norm = std::sqrt(instill::sum_squares(SumSquaresArgs{grads.data(), static_cast<int64_t>(grads.size())}));
  if (!std::isfinite(norm)) return norm;
  const double scale = max_grad_norm > 0 && norm > max_grad_norm ? max_grad_norm / (norm + 1e-6) : 1.0;
  std::vector<AdamwTensors> list;
  for (const TrainableRef& t : ts) {
    if (!t.m->defined()) *t.m = zeros(t.p->shape());
    if (!t.v->defined()) *t.v = zeros(t.p->shape());
    list.push_back({t.p, t.g, t.m, t.v});
  }
  if (!list.empty())
    instill::adamw_step(AdamwArgs{list.data(), static_cast<int64_t>(list.size()), lr, beta1, beta2, eps, weight_decay,
                                  step, scale});
  return norm;
}

}  // namespace instill
