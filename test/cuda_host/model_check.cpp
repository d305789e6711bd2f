// The model's CUDA policy on the fake 'cuda' device (fake_backend.cpp): a bf16 Llama with LoRA on device CUDA —
// kept [W | B]s and group matrices (prepare_wb), A below W, bf16 activations by default, lora_group (on by default
// since run 16; each case adds it to kOld, the default before) — against the same model on the CPU and against
// itself without the piece; one case checks that the default (INSTILL_CUDA_NEXT unset) groups and packs.
// Checks, per case: lora_group ran where expected (and never without its kept matrices or under dropout), the
// loss and every LoRA gradient equal the per-linear pass's up to f32 (and bf16-activation) rounding, and the
// CPU's within bf16 tolerance; a second pass (the kept matrices reused) gives the same; checkpointing too.
// Prints one line a case; exits 1 on any failure.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "model/llama.h"
#include "ops/lora_pack.h"
#include "ops/rope.h"
#include "runtime/dtype.h"
#include "runtime/error.h"
#include "test/cuda_host/fake_device.h"

namespace instill {
namespace cuda {
extern std::atomic<int> fake_packs, fake_calls_pack_factors, fake_side_work;
extern std::atomic<int> fake_calls_linear, fake_calls_group, fake_calls_swiglu_packed, fake_calls_swiglu_fwd_packed,
    fake_calls_dy_packed, fake_calls_norm_packed;
}
}  // namespace instill

using namespace instill;

namespace {

uint64_t rng_state = 0x2545f4914f6cdd1dull;
float uniform() {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return static_cast<float>((rng_state >> 40) * (1.0 / (1ull << 24)) * 2.0 - 1.0);
}

void set_env(const char* name, const char* value) {
  if (value) setenv(name, value, 1);
  else unsetenv(name);
}

Tensor random_cpu(const Shape& shape, DType dt, float scale, float offset = 0.f) {
  Tensor t = Tensor::empty(shape, DType::F32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data_as<float>()[i] = offset + uniform() * scale;
  if (dt == DType::F32) return t;
  Tensor b = Tensor::empty(shape, DType::BF16);
  for (int64_t i = 0; i < t.numel(); ++i) b.data_as<uint16_t>()[i] = f32_to_bf16(t.data_as<float>()[i]);
  return b;
}

Shape shape_of(const std::string& n, const LlamaConfig& c) {
  auto ends = [&](const char* s) { return n.size() >= std::strlen(s) && n.compare(n.size() - std::strlen(s), std::strlen(s), s) == 0; };
  if (n == "model.embed_tokens.weight" || n == "lm_head.weight") return {c.V, c.C};
  if (ends("q_proj.weight")) return {c.H * c.D, c.C};
  if (ends("k_proj.weight") || ends("v_proj.weight")) return {c.KVH * c.D, c.C};
  if (ends("o_proj.weight")) return {c.C, c.H * c.D};
  if (ends("gate_proj.weight") || ends("up_proj.weight")) return {c.F, c.C};
  if (ends("down_proj.weight")) return {c.C, c.F};
  if (ends("q_proj.bias")) return {c.H * c.D};
  if (ends("k_proj.bias") || ends("v_proj.bias")) return {c.KVH * c.D};
  if (ends("q_norm.weight") || ends("k_norm.weight")) return {c.D};
  return {c.C};  // the norms
}

struct Pass {
  double loss = 0;
  std::vector<std::vector<float>> grads;  // per (layer, target, A/B)
  int linear = 0, group = 0;              // lora_linear_forward / lora_group_forward calls on the fake device
  int swiglu_packed = 0;                  // swiglu_backward calls into a packed dy (swiglu_pack)
  int swiglu_fwd_packed = 0;              // swiglu_forward calls into down_proj's packed x (swiglu_pack)
  int dy_packed = 0;                      // lora_linear_backward calls on a packed residual gradient (norm_pack)
  int norm_packed = 0;                    // rmsnorm_forward calls into a group's packed x (norm_pack)
};

// Every base below also leaves out what runs 20 to 22 promoted (ce_bf16, side_grads, async_upload; attn_pack, dqkv_pack):
// the cases were written against the default before them, and a case that tests one adds it back after the base (later
// names win).
#define INSTILL_BEFORE_RUN20 ",-ce_bf16,-side_grads,-async_upload,-attn_pack,-dqkv_pack"
// The default before run 16 promoted lora_group, swiglu_pack and norm_pack: each case adds its pieces to it.
constexpr const char* kOld = "default,-lora_group,-swiglu_pack,-norm_pack" INSTILL_BEFORE_RUN20;
constexpr const char* kOldNoKept = "default,-lora_group,-swiglu_pack,-norm_pack,-wb_cache" INSTILL_BEFORE_RUN20;
// The default before run 17 promoted fewer_packs, factor_pack and rope_qk: run_piece's passes without the piece.
constexpr const char* kBeforeRun17 = "default,-fewer_packs,-factor_pack,-rope_qk" INSTILL_BEFORE_RUN20;

struct Case {
  const char* name;
  uint32_t mask;           // LoRA targets (bit = LoraTarget)
  bool qkv_bias = false;
  bool qk_norm = false;
  float dropout = 0.f;
  bool checkpointing = false;
  const char* acts = nullptr;  // INSTILL_BF16_ACTIVATIONS on the fake GPU (null: its default, bf16)
  const char* base = kOld;       // INSTILL_CUDA_NEXT without the pieces (kOld ",-wb_cache": no kept matrices)
  bool swiglu_pack = false;      // the piece is lora_group with swiglu_pack
  bool accumulate = false;       // a second pass adds its gradients to the first's (gradient accumulation)
  bool norm_pack = false;        // and norm_pack on top
  bool group = true;             // the pieces with lora_group (false: swiglu_pack / norm_pack alone)
  double cpu_tol = 0;            // the bound against the CPU model, where not the default's (0)
  bool unset = false;            // the pass with the pieces runs with INSTILL_CUDA_NEXT unset (the default has them)
  // A piece whose pass must give the default's bits (fewer_packs, factor_pack) instead: the default against the default
  // with it (run_piece), LoRA's scale this (2 = 2r / r: a power of two)
  const char* piece = nullptr;
  float scale = 2.f;
};

constexpr int64_t kR = 3;

std::vector<float> host_values(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  std::memcpy(v.data(), t.data(), t.nbytes());  // f32 gradients; the fake device's memory is the host's
  return v;
}

struct Models {
  LlamaModel cpu, gpu;
  Models(const LlamaConfig& c, const Tensor& inv) : cpu(c, inv, Device::CPU), gpu(c, inv, Device::CUDA) {}
};

Pass run_pass(LlamaModel& m, const ModelInputs& in, bool accumulate = false) {
  const int l0 = cuda::fake_calls_linear, g0 = cuda::fake_calls_group, s0 = cuda::fake_calls_swiglu_packed,
            f0 = cuda::fake_calls_swiglu_fwd_packed, d0 = cuda::fake_calls_dy_packed, n0 = cuda::fake_calls_norm_packed;
  Pass p;
  p.loss = m.loss_and_grads(in, 0, accumulate, 77).loss;
  p.linear = cuda::fake_calls_linear - l0;
  p.group = cuda::fake_calls_group - g0;
  p.swiglu_packed = cuda::fake_calls_swiglu_packed - s0;
  p.swiglu_fwd_packed = cuda::fake_calls_swiglu_fwd_packed - f0;
  p.dy_packed = cuda::fake_calls_dy_packed - d0;
  p.norm_packed = cuda::fake_calls_norm_packed - n0;
  for (int64_t l = 0; l < 2; ++l)
    for (int t = 0; t < kNumTargets; ++t) {
      if (!((m.lora_mask() >> t) & 1u)) continue;
      LoraParam& lp = m.lora(l, t);
      p.grads.push_back(host_values(lp.da));
      p.grads.push_back(host_values(lp.db));
    }
  return p;
}

int failures = 0;
double worst_rel(const Pass& a, const Pass& b) {
  double w = 0;
  for (size_t i = 0; i < a.grads.size(); ++i) {
    double d = 0, n = 0;
    for (size_t j = 0; j < a.grads[i].size(); ++j) {
      const double x = a.grads[i][j], y = b.grads[i][j];
      if (!std::isfinite(x)) return INFINITY;
      d += (x - y) * (x - y);
      n += y * y;
    }
    w = std::max(w, n > 0 ? std::sqrt(d / n) : std::sqrt(d));
  }
  return w;
}
void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("    FAIL %s\n", what.c_str());
    ++failures;
  }
}

// A case's two models (the CPU's and the fake GPU's, the same weights and adapters) and its inputs: two packed
// rows of 13 and 9 tokens.
struct World {
  LlamaConfig c;
  std::unique_ptr<Models> ms;
  Tensor ids, pos, tg, cu;
  ModelInputs in;
};

void make_world(const Case& cs, World& w) {
  LlamaConfig& c = w.c;
  c.C = 44; c.F = 76; c.L = 2; c.H = 4; c.KVH = 2; c.D = 10; c.V = 97;
  c.qkv_bias = cs.qkv_bias;
  c.qk_norm = cs.qk_norm;
  Tensor inv = Tensor::empty({c.D / 2}, DType::F32);
  for (int64_t i = 0; i < c.D / 2; ++i) inv.data_as<float>()[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / c.D));
  w.ms = std::make_unique<Models>(c, inv);
  Models& ms = *w.ms;
  for (const std::string& n : ms.cpu.weight_names()) {
    const Shape s = shape_of(n, c);
    const bool norm = s.size() == 1 && n.find("bias") == std::string::npos;
    const Tensor t = random_cpu(s, s.size() == 2 ? DType::BF16 : DType::F32, norm ? 0.1f : 0.3f, norm ? 1.f : 0.f);
    ms.cpu.set_weight(n, t);
    ms.gpu.set_weight(n, t);
  }
  for (LlamaModel* m : {&ms.cpu, &ms.gpu}) m->add_lora(cs.mask, kR, cs.scale, cs.dropout);
  for (int64_t l = 0; l < c.L; ++l)
    for (int t = 0; t < kNumTargets; ++t) {
      if (!((cs.mask >> t) & 1u)) continue;
      LoraParam& pc = ms.cpu.lora(l, t);
      const Tensor a = random_cpu(pc.a.shape(), DType::F32, 0.3f), b = random_cpu(pc.b.shape(), DType::F32, 0.3f);
      for (LlamaModel* m : {&ms.cpu, &ms.gpu}) {
        LoraParam& p = m->lora(l, t);
        std::memcpy(p.a.data(), a.data(), a.nbytes());
        std::memcpy(p.b.data(), b.data(), b.nbytes());
      }
    }
  for (LlamaModel* m : {&ms.cpu, &ms.gpu}) m->set_checkpointing(cs.checkpointing);
  const int64_t n = 22;
  w.ids = Tensor::empty({n}, DType::I32);
  w.pos = Tensor::empty({n}, DType::I32);
  w.tg = Tensor::empty({n}, DType::I32);
  w.cu = Tensor::empty({3}, DType::I32);
  for (int64_t i = 0; i < n; ++i) {
    w.ids.data_as<int32_t>()[i] = static_cast<int32_t>((i * 37 + 5) % c.V);
    w.pos.data_as<int32_t>()[i] = static_cast<int32_t>(i < 13 ? i : i - 13);
    w.tg.data_as<int32_t>()[i] = i == 0 || i == 13 ? -100 : static_cast<int32_t>((i * 11 + 3) % c.V);
  }
  w.cu.data_as<int32_t>()[0] = 0; w.cu.data_as<int32_t>()[1] = 13; w.cu.data_as<int32_t>()[2] = 22;
  w.in = ModelInputs{&w.ids, &w.pos, &w.cu, &w.tg};
}

// A piece against the default it was measured on (Case's piece on kBeforeRun17): every gradient and the loss in the same bits, and the packs it saves,
// counted (fake_packs). fewer_packs: where s is a power of two (the fake's sums are in double, so only what the piece
// changes could differ: bf16(s·g) read with alpha 1 where bf16(g) was read with alpha s), within f32 rounding
// otherwise. factor_pack: always (the same bf16 copies of the factors, written by lora_pack_factors before the
// forwards instead of by each forward).
void run_piece(const Case& cs) {
  World w;
  make_world(cs, w);
  LlamaModel& gpu = w.ms->gpu;
  const std::string piece = cs.piece, with = std::string(kBeforeRun17) + "," + piece;
  // (a "-name" in the piece leaves that one out of both passes: the base the piece is measured on)
  std::string base = kBeforeRun17;
  for (size_t at = 0; (at = piece.find('-', at)) != std::string::npos;) {
    const size_t end = piece.find(',', at);
    base += "," + piece.substr(at, end == std::string::npos ? std::string::npos : end - at);
    at = end == std::string::npos ? piece.size() : end;
  }
  set_env("INSTILL_BF16_ACTIVATIONS", cs.acts);
  int batches = 0;  // lora_pack_factors calls in the passes counted with the piece
  int side_ops = 0, side_ops_off = 0;  // products and packs left to the side stream, with the piece and without
  const auto pass = [&](const char* next, int& packs) {  // next: null for the passes without the piece
    set_env("INSTILL_CUDA_NEXT", next ? next : base.c_str());
    const int k0 = cuda::fake_packs, b0 = cuda::fake_calls_pack_factors, s0 = cuda::fake_side_work;
    Pass p = run_pass(gpu, w.in);
    if (cs.accumulate) p = run_pass(gpu, w.in, true);
    packs = cuda::fake_packs - k0;
    if (next) batches += cuda::fake_calls_pack_factors - b0;
    (next ? side_ops : side_ops_off) += cuda::fake_side_work - s0;
    return p;
  };
  // The factors as an optimizer leaves them between passes: changed in place (version k), so that a pass that read
  // copies made for the pass before (a piece skipping a write it should make) would see the other version's
  const auto set_factors = [&](uint32_t k) {
    uint64_t st = 0x9e3779b97f4a7c15ull * (k + 1);
    for (int64_t l = 0; l < w.c.L; ++l)
      for (int t = 0; t < kNumTargets; ++t) {
        if (!((cs.mask >> t) & 1u)) continue;
        LoraParam& lp = gpu.lora(l, t);
        for (Tensor* f : {&lp.a, &lp.b})
          for (int64_t i = 0; i < f->numel(); ++i) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            f->data_as<float>()[i] = 0.3f * (static_cast<float>(st >> 40) / static_cast<float>(1u << 24) * 2.f - 1.f);
          }
      }
  };
  // Version 0 in the first pass (which copies W into the kept matrices), 2 in a pass with the piece, then 1 with it
  // (compared), 3 without, 1 without (compared): whatever copy the piece failed to write, the compared pass reads
  // version 0 or 2 there
  int packs_off = 0, packs_on = 0, packs_again = 0, unused = 0;
  set_factors(0);
  pass(nullptr, unused);
  set_factors(2);
  pass(with.c_str(), unused);
  set_factors(1);
  const Pass on = pass(with.c_str(), packs_on);
  const Pass again = pass(with.c_str(), packs_again);
  set_factors(3);
  pass(nullptr, unused);
  set_factors(1);
  const Pass off = pass(nullptr, packs_off);
  set_env("INSTILL_CUDA_NEXT", nullptr);
  set_env("INSTILL_BF16_ACTIVATIONS", nullptr);
  int e = 0;
  std::frexp(cs.scale, &e);
  const bool all = piece == "all";  // every piece at once: these two among them
  const bool fewer = all || piece.find("fewer_packs") != std::string::npos;
  const bool factor = all || piece.find("factor_pack") != std::string::npos;
  // attn_pack: the attention writes o_proj's packed x where o_proj is adapted, its attention activations bf16 (the
  // default's, not f32 ones nor Qwen3's q/k norm's) and no dropout: o_proj's forward packs no x, one pack a layer
  const bool attn = (all || piece.find("attn_pack") != std::string::npos) && ((cs.mask >> kO) & 1u) && cs.acts == nullptr &&
                    !cs.qk_norm && cs.dropout == 0.f;
  // dqkv_pack: the backward's rope and attention write dq, dk, dv into the q/k/v group's packed dy where the group has
  // all three (and bf16 attention activations, no dropout): its backward packs no dy, three packs a layer
  const uint32_t qkv = (1u << kQ) | (1u << kK) | (1u << kV);
  const bool dqkv = (all || piece.find("dqkv_pack") != std::string::npos) && (cs.mask & qkv) == qkv && cs.acts == nullptr &&
                    !cs.qk_norm && cs.dropout == 0.f;
  // side_grads: every LoRA backward's dA and dB queued on the side stream (the fake runs them at the model's joins,
  // as late as those allow), but under checkpointing or dropout, which rewrite what they read
  const bool side = (all || piece.find("side_grads") != std::string::npos) && !cs.checkpointing && cs.dropout == 0.f;
  expect(side ? side_ops > 0 : side_ops == 0, "products and packs on the side stream: " + std::to_string(side_ops));
  expect(side_ops_off == 0, "products and packs on the side stream without the piece: " + std::to_string(side_ops_off));
  const bool exact = !fewer || std::ldexp(0.5f, e) == cs.scale;
  const double e_off = worst_rel(on, off), e_again = worst_rel(again, on);
  expect(exact ? on.loss == off.loss : std::fabs(on.loss - off.loss) <= 1e-6 * std::fabs(off.loss),
         "loss " + std::to_string(on.loss) + " against the default's " + std::to_string(off.loss));
  expect(exact ? e_off == 0 : e_off <= 1e-5, "gradients against the default: worst " + std::to_string(e_off) +
                                                  (exact ? " (not the same bits)" : ""));
  expect(e_again == 0, "a second pass: worst " + std::to_string(e_again) + " (not the same bits)");
  // (under dropout, lora_dropout's own path, which the pieces leave alone: the fake runs the CPU's, no packs)
  expect((cs.dropout > 0 || !(fewer || factor || attn || dqkv) ? packs_on == packs_off : packs_on < packs_off) && packs_again == packs_on,
         "packs a pass: " + std::to_string(packs_on) + " (again " + std::to_string(packs_again) + ") against the default's " +
             std::to_string(packs_off));
  const int passes = 3 * (cs.accumulate ? 2 : 1);  // the three with the piece
  if (factor)
    expect(batches == (cs.dropout > 0 ? 0 : passes), "lora_pack_factors calls: " + std::to_string(batches) + ", expected " +
                                                         std::to_string(cs.dropout > 0 ? 0 : passes));
  // Every linear adapted, bf16 activations, s a power of two, neither checkpointing nor accumulation: per layer,
  // fewer_packs: o_proj's and down_proj's forward read A below W (where W has the spare rows: IN % 8 == 0, so not
  // this down_proj at IN = 76), their backward B from the kept [W | B], s·g from g's product and dA from it (6),
  // each group's backward the same two of s·g (4), and the two groups' and down_proj's dB s·u from their packed x
  // (3: xn1, xn2 and h, the layers' own) and their forwards s·u there from u's product (3); factor_pack: each group's one launch of B and A (2),
  // o_proj's B and A below W (2) and down_proj's B (1), less the pass's one launch for all; attn_pack: o_proj's x (1),
  // and with fewer_packs o_proj's s·u (forward and dB) in its packed x as the groups' and down_proj's (2); dqkv_pack:
  // the q/k/v group's dy (3). Less one with fewer_packs: the first layer's q/k/v group makes no dx (nothing reads it
  // without full fine-tuning), so its s·g is packed for nothing even without the piece.
  if (cs.mask == (1u << kNumTargets) - 1 && cs.acts == nullptr && exact && !cs.checkpointing && !cs.accumulate && cs.dropout == 0.f) {
    const int below_w = ((w.c.H * w.c.D) % 8 == 0) + (w.c.F % 8 == 0), L = static_cast<int>(w.c.L);
    const int px = 3 + (attn ? 1 : 0);  // the packed x's whose s·u the forward writes and dB reads (att's with attn_pack)
    const int want = (fewer ? (below_w + 6 + 4 + px + px) * L - 1 : 0) + (factor ? (2 + 2 + below_w) * L - 1 : 0) + (attn ? L : 0) +
                     (dqkv ? 3 * L : 0);
    expect(packs_off - packs_on == want, "packs saved: " + std::to_string(packs_off - packs_on) + ", expected " + std::to_string(want));
  }
  std::printf("       packs a pass: %d -> %d with %s; worst grad against the default %.2e\n", packs_off, packs_on, cs.piece, e_off);
}

void run(const Case& cs) {
  if (cs.piece) return run_piece(cs);
  World w;
  make_world(cs, w);
  const LlamaConfig& c = w.c;
  Models& ms = *w.ms;
  const ModelInputs& in = w.in;

  set_env("INSTILL_BF16_ACTIVATIONS", cs.acts);
  set_env("INSTILL_CUDA_NEXT", cs.base);
  // (accumulating: a first pass, then the one compared, which adds to it)
  const auto pass = [&](LlamaModel& m) {
    if (!cs.accumulate) return run_pass(m, in);
    const Pass first = run_pass(m, in);
    Pass p = run_pass(m, in, true);
    p.linear += first.linear;
    p.group += first.group;
    p.swiglu_packed += first.swiglu_packed;
    p.swiglu_fwd_packed += first.swiglu_fwd_packed;
    p.dy_packed += first.dy_packed;
    p.norm_packed += first.norm_packed;
    return p;
  };
  const int passes = cs.accumulate ? 2 : 1;
  const Pass off = pass(ms.gpu);
  const Tensor logits_off = ms.gpu.logits(in, false);
  const std::string with = std::string(cs.base) + (cs.group ? ",lora_group" : "") + (cs.swiglu_pack ? ",swiglu_pack" : "") +
                           (cs.norm_pack ? ",norm_pack" : "");
  set_env("INSTILL_CUDA_NEXT", cs.unset ? nullptr : with.c_str());
  const Pass on = pass(ms.gpu);
  const Pass again = pass(ms.gpu);  // the kept matrices from the pass before
  const int group_before_logits = cuda::fake_calls_group;
  const Tensor logits_on = ms.gpu.logits(in, false);  // a forward outside run(): grouped as well (the same kept matrices)
  const int logits_groups = cuda::fake_calls_group - group_before_logits;
  set_env("INSTILL_CUDA_NEXT", nullptr);
  const Pass cpu = pass(ms.cpu);
  set_env("INSTILL_BF16_ACTIVATIONS", nullptr);

  // which path: a group of two or more adapted linears among q, k, v / gate, up, with its kept matrix (wb_cache)
  // and no dropout
  const auto count = [&](std::initializer_list<int> ts) {
    int k = 0;
    for (int t : ts) k += (cs.mask >> t) & 1u;
    return k;
  };
  const int qkv = count({kQ, kK, kV}), mlp = count({kGate, kUp}), all = count({kQ, kK, kV, kO, kGate, kUp, kDown});
  const bool kept = std::string(cs.base).find("-wb_cache") == std::string::npos && cs.dropout == 0.f;
  const int groups = kept && cs.group ? (qkv >= 2) + (mlp >= 2) : 0;
  const int grouped = kept && cs.group ? (qkv >= 2 ? qkv : 0) + (mlp >= 2 ? mlp : 0) : 0;
  // (with dropout the linears go through lora_dropout, which calls no lora_linear on this backend)
  const int linear_calls = cs.dropout > 0 ? off.linear : (all - grouped) * static_cast<int>(c.L) * (cs.checkpointing ? 2 : 1) * passes;
  expect(off.group == 0, "no lora_group without the piece (" + std::to_string(off.group) + " calls)");
  const int want_groups = groups * static_cast<int>(c.L) * (cs.checkpointing ? 2 : 1) * passes;
  expect(on.group == want_groups, "lora_group forwards: " + std::to_string(on.group) + ", expected " + std::to_string(want_groups));
  // (a forward outside run() groups as a training pass does: with the kept matrices, which a model with LoRA
  // dropout never keeps)
  const int want_logits = groups * static_cast<int>(c.L);
  expect(logits_groups == want_logits, "lora_group forwards in logits(): " + std::to_string(logits_groups) + ", expected " + std::to_string(want_logits));
  {
    const std::vector<float> a = host_values(logits_on), b = host_values(logits_off);
    double d = 0, n = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
      n = std::max(n, std::fabs(static_cast<double>(b[i])));
    }
    expect(d <= 1e-2 * n, "logits() against the per-linear pass: " + std::to_string(d) + " of " + std::to_string(n));
  }
  const int packed = cs.swiglu_pack && cs.group && kept && mlp == 2 ? static_cast<int>(c.L) * passes : 0;
  expect(on.swiglu_packed == packed && off.swiglu_packed == 0 && cpu.swiglu_packed == 0,
         "swiglu backwards into the packed dy: " + std::to_string(on.swiglu_packed) + ", expected " + std::to_string(packed));
  // and its forward into down_proj's packed x: with bf16 activations, down_proj adapted, no dropout (each forward,
  // the checkpointed recompute too)
  // (bf16 activations apply only where every linear is adapted: act_dtype())
  const bool bf16_h = (cs.acts == nullptr || std::strcmp(cs.acts, "1") == 0 || std::strcmp(cs.acts, "mlp") == 0) && all == 7;
  const int fwd_packed = cs.swiglu_pack && bf16_h && ((cs.mask >> kDown) & 1u) && cs.dropout == 0.f
                             ? static_cast<int>(c.L) * (cs.checkpointing ? 2 : 1) * passes : 0;
  // norm_pack: o_proj's and down_proj's backward on the norms' packed residual gradient (no dropout)
  const int od = static_cast<int>((cs.mask >> kO) & 1u) + static_cast<int>((cs.mask >> kDown) & 1u);
  const int dyp = cs.norm_pack && cs.dropout == 0.f ? od * static_cast<int>(c.L) * passes : 0;
  expect(on.dy_packed == dyp && off.dy_packed == 0,
         "lora_linear backwards on the packed residual gradient: " + std::to_string(on.dy_packed) + ", expected " + std::to_string(dyp));
  // and the norms' forward into the groups' packed x: each group whose every linear is adapted, with bf16
  // activations and its kept matrix
  const int full_groups = (qkv == 3) + (mlp == 2);
  const int normp = cs.norm_pack && cs.group && bf16_h && kept ? full_groups * static_cast<int>(c.L) * (cs.checkpointing ? 2 : 1) * passes : 0;
  expect(on.norm_packed == normp && off.norm_packed == 0,
         "norms into a group's packed x: " + std::to_string(on.norm_packed) + ", expected " + std::to_string(normp));
  expect(on.swiglu_fwd_packed == fwd_packed && off.swiglu_fwd_packed == 0,
         "swiglu forwards into down_proj's packed x: " + std::to_string(on.swiglu_fwd_packed) + ", expected " + std::to_string(fwd_packed));
  expect(on.linear == linear_calls, "lora_linear forwards beside them: " + std::to_string(on.linear) + ", expected " + std::to_string(linear_calls));
  const double e_off = worst_rel(on, off), e_again = worst_rel(again, on), e_cpu = worst_rel(on, cpu);
  // bf16 activations round y and dx to bf16 after each member's product on the per-linear path, once on the group's
  const bool bf16_acts = cs.acts == nullptr || std::strcmp(cs.acts, "1") == 0 || std::strcmp(cs.acts, "mlp") == 0;
  const double tol_off = bf16_acts ? 2e-2 : 1e-4;
  expect(std::fabs(on.loss - off.loss) <= 1e-4 * std::fabs(off.loss), "loss " + std::to_string(on.loss) + " against " + std::to_string(off.loss));
  expect(e_off <= tol_off, "gradients against the per-linear pass: worst " + std::to_string(e_off));
  expect(e_again == 0, "a second pass on the kept matrices: worst " + std::to_string(e_again) + " (not the same bits)");
  // (the CPU model keeps f32 activations: against bf16 ones, the 5–7% of test/model/bf16_activations.test.ts)
  expect(e_cpu <= (cs.cpu_tol > 0 ? cs.cpu_tol : bf16_acts ? 1.2e-1 : 5e-2), "gradients against the CPU: worst " + std::to_string(e_cpu));
  expect(std::fabs(on.loss - cpu.loss) <= 1e-2 * std::fabs(cpu.loss), "loss against the CPU: " + std::to_string(on.loss) + " vs " + std::to_string(cpu.loss));
  std::printf("       lora_group %d + lora_linear %d forwards, %d packed swiglu backwards; worst grad against the per-linear pass %.2e, the CPU %.2e\n",
              on.group, on.linear, on.swiglu_packed, e_off, e_cpu);
}

}  // namespace

// The ErrorCode a call throws, or -1.
template <typename Call>
int code_of(Call&& call) {
  try {
    call();
  } catch (const Error& e) {
    return static_cast<int>(e.code());
  }
  return -1;
}

// lora_pack_factors' front (ops/lora_pack.cpp) on what the model never passes: a kept [W | B] without W, a group
// without its kept matrix, a wrong shape, CPU tensors (no entry there): each an Error with its code, not a crash.
void pack_factors_errors() {
  const auto pack_code = [&](const LoraPackFactorsArgs& p) { return code_of([&] { lora_pack_factors(p); }); };
  Tensor w = Tensor::empty({16, 24}, DType::BF16, Device::CUDA), a = Tensor::empty({4, 24}, DType::F32, Device::CUDA),
         b = Tensor::empty({16, 4}, DType::F32, Device::CUDA), wb = Tensor::empty({16, 32}, DType::BF16, Device::CUDA),
         narrow = Tensor::empty({16, 24}, DType::BF16, Device::CUDA);
  LoraLinearForwardArgs lin{nullptr, &w, nullptr, &a, &b, 1.f, nullptr, nullptr};
  lin.wb = &wb;
  LoraPackFactorsArgs p;
  p.linears.push_back(&lin);
  const int no_w = pack_code(p);  // wb_has_w false
  lin.wb_has_w = true;
  lin.wb = &narrow;
  const int shape = pack_code(p);  // ld 24 < in + r = 28
  LoraGroupForwardArgs g;
  g.m = 1;
  g.w[0] = &w;
  g.a[0] = &a;
  g.b[0] = &b;
  LoraPackFactorsArgs pg;
  pg.groups.push_back(&g);
  const int no_kept = pack_code(pg);
  Tensor wc = Tensor::empty({16, 24}, DType::BF16), ac = Tensor::empty({4, 24}, DType::F32), bc = Tensor::empty({16, 4}, DType::F32),
         wbc = Tensor::empty({16, 32}, DType::BF16);
  LoraLinearForwardArgs cpu{nullptr, &wc, nullptr, &ac, &bc, 1.f, nullptr, nullptr};
  cpu.wb = &wbc;
  cpu.wb_has_w = true;
  LoraPackFactorsArgs pc;
  pc.linears.push_back(&cpu);
  const int on_cpu = pack_code(pc);
  // rope's second tensor (ops/rope.h): x2 without out2, and an x2 of another head dimension
  const auto rope_code = [&](const RopeArgs& r) { return code_of([&] { rope_forward(r); }); };
  Tensor q = Tensor::zeros({3, 2, 8}, DType::F32), k = Tensor::zeros({3, 1, 8}, DType::F32), k6 = Tensor::zeros({3, 1, 6}, DType::F32);
  Tensor pos = Tensor::zeros({3}, DType::I32), inv = Tensor::zeros({4}, DType::F32);
  RopeArgs r{&q, &pos, &inv, &q};
  r.x2 = &k;
  const int rope_alone = rope_code(r);
  r.out2 = &k6;
  r.x2 = &k6;
  const int rope_d = rope_code(r);
  r.x2 = r.out2 = &k;
  const int rope_ok = rope_code(r);
  const bool ok = no_w == static_cast<int>(ErrorCode::Arg) && shape == static_cast<int>(ErrorCode::Shape) &&
                  no_kept == static_cast<int>(ErrorCode::Arg) && on_cpu == static_cast<int>(ErrorCode::Unsupported) &&
                  rope_alone == static_cast<int>(ErrorCode::Arg) && rope_d == static_cast<int>(ErrorCode::Shape) && rope_ok == -1;
  if (!ok) {
    std::printf("    FAIL error codes: no W %d, shape %d, no kept %d, on the CPU %d; rope x2 alone %d, other D %d, fine %d\n", no_w,
                shape, no_kept, on_cpu, rope_alone, rope_d, rope_ok);
    ++failures;
  }
  std::printf("%s lora_pack_factors: E_ARG, E_SHAPE and E_UNSUPPORTED where its arguments are wrong; rope's x2 too\n",
              ok ? "ok  " : "FAIL");
}

int main() {
  pack_factors_errors();
  const uint32_t every = (1u << kNumTargets) - 1;
  const std::vector<Case> cases = {
      {"every linear, bf16 activations (the GPU's default)", every},
      {"every linear, f32 activations", every, false, false, 0.f, false, "0"},
      {"q, v, gate, up (groups of two); o, down without adapters", (1u << kQ) | (1u << kV) | (1u << kGate) | (1u << kUp), false, false, 0.f, false, "0"},
      {"k, v, down: q without an adapter writes dx first", (1u << kK) | (1u << kV) | (1u << kDown), false, false, 0.f, false, "0"},
      {"q/k/v biases (Qwen2), bf16 activations", every, true},
      {"q/k norm (Qwen3)", every, false, true},
      {"gradient checkpointing", every, false, false, 0.f, true, "0"},
      {"no kept matrices (wb_cache off): not grouped", every, false, false, 0.f, false, "0", kOldNoKept},
      {"LoRA dropout: not grouped", every, false, false, 0.1f, false, "0"},
      {"swiglu_pack: swiglu's backward into the MLP group's packed dy (bf16 activations)", every, false, false, 0.f, false, nullptr, kOld, true},
      {"swiglu_pack, f32 activations, checkpointing", every, false, false, 0.f, true, "0", kOld, true},
      {"swiglu_pack without up's adapter: not packed", every & ~(1u << kUp), false, false, 0.f, false, "0", kOld, true},
      {"accumulated gradients (two passes), swiglu_pack", every, false, false, 0.f, false, nullptr, kOld, true, true},
      {"swiglu_pack, bf16 activations, checkpointing (h recomputed into the packed x)", every, false, false, 0.f, true, nullptr, kOld, true},
      {"swiglu_pack, bf16 activations, down without an adapter: h not packed", every & ~(1u << kDown), false, false, 0.f, false, nullptr, kOld, true},
      {"norm_pack (with swiglu_pack), bf16 activations, accumulated", every, false, false, 0.f, false, nullptr, kOld, true, true, true},
      {"norm_pack, bf16 activations, checkpointing, Qwen3 q/k norm", every, false, true, 0.f, true, nullptr, kOld, true, false, true},
      {"norm_pack, bf16 activations, q/k/v biases (Qwen2)", every, true, false, 0.f, false, nullptr, kOld, true, false, true},
      {"norm_pack, q and k only: f32 activations (a linear without an adapter), nothing packed", every & ~(1u << kV), false, false, 0.f, false, nullptr, kOld, true, false, true},
      // (this configuration's own distance from the CPU model, with or without the pieces: 5.3e-2)
      {"norm_pack, f32 activations, checkpointing, o_proj without an adapter", every & ~(1u << kO), false, false, 0.f, true, "0", kOld, true, false, true, true, 8e-2},
      {"swiglu_pack and norm_pack without lora_group (h and dres packed, no group)", every, false, false, 0.f, false, nullptr, kOld, true, false, true, false},
      {"norm_pack under LoRA dropout: not packed", every, false, false, 0.1f, false, "0", kOld, true, false, true},
      {"the default (INSTILL_CUDA_NEXT unset): lora_group, swiglu_pack and norm_pack", every, false, false, 0.f, false, nullptr, kOld, true, true, true,
       true, 0, true},
      // pieces against the default (Case's piece): positional fields up to `unset` as above
      {"fewer_packs: every linear, bf16 activations", every, false, false, 0.f, false, nullptr, kOld, false, false, false,
       true, 0, false, "fewer_packs"},
      {"fewer_packs: f32 activations (B from the kept [W | B], A below W; g still f32 for TF32 dA)", every, false, false,
       0.f, false, "0", kOld, false, false, false, true, 0, false, "fewer_packs"},
      {"fewer_packs: checkpointing, accumulated, Qwen3 q/k norm", every, false, true, 0.f, true, nullptr, kOld, false, true,
       false, true, 0, false, "fewer_packs"},
      {"fewer_packs: q, v, gate, down (a group of two, a linear without a group)", (1u << kQ) | (1u << kV) | (1u << kGate) | (1u << kDown),
       false, false, 0.f, false, nullptr, kOld, false, false, false, true, 0, false, "fewer_packs"},
      {"fewer_packs: s = 1.5 (no power of two: g packed as before, B and A still read in bf16)", every, false, false, 0.f,
       false, nullptr, kOld, false, false, false, true, 0, false, "fewer_packs", 1.5f},
      {"fewer_packs under LoRA dropout (lora_dropout's own path: nothing changes)", every, false, false, 0.1f, false, "0",
       kOld, false, false, false, true, 0, false, "fewer_packs"},
      {"factor_pack: every linear, bf16 activations", every, false, false, 0.f, false, nullptr, kOld, false, false, false,
       true, 0, false, "factor_pack"},
      {"factor_pack: f32 activations, s = 1.5", every, false, false, 0.f, false, "0", kOld, false, false, false, true, 0,
       false, "factor_pack", 1.5f},
      {"factor_pack: checkpointing, accumulated, Qwen2 q/k/v biases", every, true, false, 0.f, true, nullptr, kOld, false,
       true, false, true, 0, false, "factor_pack"},
      {"factor_pack: q, v, gate, down (a group of two, a linear without a group)", (1u << kQ) | (1u << kV) | (1u << kGate) | (1u << kDown),
       false, false, 0.f, false, nullptr, kOld, false, false, false, true, 0, false, "factor_pack"},
      {"factor_pack under LoRA dropout: not called", every, false, false, 0.1f, false, "0", kOld, false, false, false, true,
       0, false, "factor_pack"},
      {"rope_qk: q and k in one rope call (the CPU's rope here: two passes, the same bits)", every, false, false, 0.f, false,
       nullptr, kOld, false, false, false, true, 0, false, "rope_qk"},
      {"rope_qk, Qwen3 q/k norm, checkpointing", every, false, true, 0.f, true, nullptr, kOld, false, false, false, true, 0,
       false, "rope_qk"},
      {"every piece at once (INSTILL_CUDA_NEXT=all), checkpointing, accumulated: the default's bits", every, false, false,
       0.f, true, nullptr, kOld, false, true, false, true, 0, false, "all"},
      {"factor_pack with fewer_packs", every, false, false, 0.f, false, nullptr, kOld, false, false, false, true, 0, false,
       "factor_pack,fewer_packs"},
      {"attn_pack: the attention's output into o_proj's packed x (the CPU's attention here, into its columns)", every,
       false, false, 0.f, false, nullptr, kOld, false, false, false, true, 0, false, "attn_pack"},
      {"attn_pack, checkpointing, accumulated", every, false, false, 0.f, true, nullptr, kOld, false, true, false, true, 0,
       false, "attn_pack"},
      {"attn_pack with fewer_packs and factor_pack (o_proj's s·u read from its packed x)", every, false, false, 0.f, false,
       nullptr, kOld, false, false, false, true, 0, false, "attn_pack,fewer_packs,factor_pack"},
      {"attn_pack, f32 activations: not packed", every, false, false, 0.f, false, "0", kOld, false, false, false, true, 0,
       false, "attn_pack"},
      {"attn_pack without o_proj's adapter: not packed", every & ~(1u << kO), false, false, 0.f, false, nullptr, kOld, false,
       false, false, true, 0, false, "attn_pack"},
      {"attn_pack, Qwen3 q/k norm (f32 attention activations): not packed", every, false, true, 0.f, false, nullptr, kOld,
       false, false, false, true, 0, false, "attn_pack"},
      {"attn_pack under LoRA dropout: not packed", every, false, false, 0.1f, false, "0", kOld, false, false, false, true,
       0, false, "attn_pack"},
      {"dqkv_pack: dq, dk (rope) and dv (the CPU's attention here) into the q/k/v group's packed dy", every, false, false,
       0.f, false, nullptr, kOld, false, false, false, true, 0, false, "dqkv_pack"},
      {"dqkv_pack, checkpointing, accumulated, with attn_pack", every, false, false, 0.f, true, nullptr, kOld, false, true,
       false, true, 0, false, "dqkv_pack,attn_pack"},
      {"dqkv_pack with rope_qk (one rope call for q and k into their columns; the others: two, as the base has it off)",
       every, false, false, 0.f, false, nullptr, kOld, false, false, false, true, 0, false, "dqkv_pack,rope_qk"},
      {"dqkv_pack with fewer_packs and factor_pack", every, false, false, 0.f, false, nullptr, kOld, false, false, false, true,
       0, false, "dqkv_pack,fewer_packs,factor_pack"},
      {"dqkv_pack without k_proj's adapter (a group of two): not packed", every & ~(1u << kK), false, false, 0.f, false,
       nullptr, kOld, false, false, false, true, 0, false, "dqkv_pack"},
      {"dqkv_pack, f32 activations: not packed", every, false, false, 0.f, false, "0", kOld, false, false, false, true, 0,
       false, "dqkv_pack"},
      {"dqkv_pack, Qwen3 q/k norm: not packed", every, false, true, 0.f, false, nullptr, kOld, false, false, false, true, 0,
       false, "dqkv_pack"},
      {"side_grads: dA and dB on the side stream (done at the model's joins, as late as they allow)", every, false, false,
       0.f, false, nullptr, kOld, false, false, false, true, 0, false, "side_grads"},
      {"side_grads, accumulated, with dqkv_pack and attn_pack (the group's dy and o_proj's x written in place)", every,
       false, false, 0.f, false, nullptr, kOld, false, true, false, true, 0, false, "side_grads,dqkv_pack,attn_pack"},
      {"side_grads with fewer_packs and factor_pack (s g and s u read from the packed buffers)", every, false, false, 0.f,
       false, nullptr, kOld, false, false, false, true, 0, false, "side_grads,fewer_packs,factor_pack"},
      {"side_grads, f32 activations, s = 1.5 (g and u in f32 scratch)", every, false, false, 0.f, false, "0", kOld, false,
       false, false, true, 0, false, "side_grads", 1.5f},
      {"side_grads, q, v, gate, down (a group of two, a linear without a group), Qwen2 biases", (1u << kQ) | (1u << kV) |
       (1u << kGate) | (1u << kDown), true, false, 0.f, false, nullptr, kOld, false, false, false, true, 0, false, "side_grads"},
      {"side_grads, checkpointing: on the main stream", every, false, false, 0.f, true, nullptr, kOld, false, false, false,
       true, 0, false, "side_grads"},
      {"side_grads without norm_pack and swiglu_pack (every packed dy the op's own)", every, false, false, 0.f, false,
       nullptr, kOld, false, true, false, true, 0, false, "side_grads,-norm_pack,-swiglu_pack"},
      {"side_grads under LoRA dropout: on the main stream", every, false, false, 0.1f, false, "0", kOld, false, false, false,
       true, 0, false, "side_grads"},
  };
  return cuda::fake::run_cases(cases, failures, run);
}
