#include "runtime/next.h"

#include <cstdlib>
#include <mutex>

#include "runtime/error.h"

namespace instill {

namespace {

// Every piece with its name, in Next's order: the one list to extend. `promoted`: on by default (INSTILL_CUDA_NEXT
// unset, or `default` in it) — a GPU session whose tests and A/B say a piece wins sets it here; `none` still
// turns it off (the verified kernels, as the pieces' own tests compare). Run 14 (bench/RESULTS.md, H100) promoted
// flash_lean, wb_cache and residual: their tests passed and each made the 1B step faster. Run 16 promoted
// lora_group, swiglu_pack and norm_pack (36.47 -> 33.48 -> 32.56 -> 31.95 ms, each on top of the one before).
// Run 17 promoted fewer_packs, factor_pack and rope_qk (together: 32.08 -> 30.60 ms), and stop 23 removed the
// pieces it measured slower or no faster: split_k, ce_l2, dkv_pairs, dkv_whole, dq_atomic, dkv_atomic (and with the
// last two INSTILL_CUDA_DETERMINISTIC, as no piece adds up with atomics now), and rope_token (its bits off by an f32
// ulp in runs 14-16; rope_qk rotates q and k in one pass instead). Run 18 measured the two left waiting no faster,
// and stop 24 removed them: group_wide (lora_group's forward as one product over every member: +1.4%) and bf16_beta
// (cuBLASLt adding into a bf16 C itself: 0.997x by medians, 1.003x by mins; run 17 1.007x). Stop 24 also added and
// took out skinny (LoRA's narrow products on a split-K mma.sync kernel: correct, 1.059x the step in run 19).
// Run 20 (H200, the first to run stops 25-31's pieces) promoted ce_bf16 (0.971x the step) and side_grads (0.991x by
// medians, 0.972x by mins); the others it timed were no faster or slower (bench/RESULTS.md, "Runs 20 and 21"). Run 21
// found the two together 1.051x faster than the default before them, and promoted async_upload (0.992x by medians and
// by mins: under the 1% a piece is promoted on, but stop 29 set its bar in advance at its tests and a step no slower).
// Stop 32 took out group_fork (lora_group's forward running k's and v's products on the side stream beside q's: run 20
// 1.002x, run 21 1.014x; its code is in commit 1ef152a). Stop 32 took out norm_u, norm_g, swiglu_g and swiglu_u
// (LoRA's u and g made inside the norms and SwiGLU: run 20 1.253x the step; their kernels one CTA an SM at 12.5%
// occupancy; code in commit 1ef152a). Run 22 (stop 33) promoted attn_pack and dqkv_pack: their tests passed in runs 21 and
// 22, their packs left the op profile, and the step was no slower (together 0.998x / 0.990x, then 0.989x / 0.994x, by
// medians / mins), the bar stop 24 set for them in advance. Stop 33 took out qkv_one (q, k and v as one product that
// rope reads: runs 20-24 1.004x, 1.000x, 0.996x, 0.987x, 1.005x the step; code in commit 3917c20). Runs 25-27
// (stop 36, H200) promoted flash_wgmma, dq_wgmma and dkv_wgmma together, on stop 34's swizzled tiles: every test
// passed, and the step was 0.949x-0.979x at batch 1, 0.962x-0.972x at batch 8 (45.5-45.9% MFU), 0.956x at 4, 0.974x
// at 16. They take the attention only on compute capability 9.0 (elsewhere the lean kernels run, as before). Stop 36
// took out norm_rows (its kernels slower than the block kernels: rmsnorm's dx +40%), optim_loads (~0.05 ms a step,
// 1.007x and 1.001x) and ce_cluster (the softmax 0.47 -> 0.44 ms at batch 1, 3.93 -> 4.03 at batch 8); their code is
// in commit 4c1e429 (bench/RESULTS.md, "Runs 25-30").
// (`narrow`, LoRA's u, g, dA, dB on CUDA-core kernels, was removed in stop 19: ~2x slower than cuBLASLt in run 14.
// Stop 22 removed five that runs 14–16 measured no faster: `pack_wb` (moot with wb_cache), `flash_mt`, `flash_occ`,
// `stored_ds` and `attn_prep` (nothing on top of flash_lean, or slower); bench/RESULTS.md has their numbers. Stop 34
// folded `wgmma_mn` into the three wgmma pieces: their swizzled tiles serve both products, with no transposed copies.)
struct Piece {
  Next which;
  const char* name;
  bool promoted;
};
constexpr Piece kAll[] = {
    {Next::Residual, "residual", true},      {Next::WbCache, "wb_cache", true},
    {Next::FlashLean, "flash_lean", true},   {Next::LoraGroup, "lora_group", true},
    {Next::SwigluPack, "swiglu_pack", true}, {Next::NormPack, "norm_pack", true},
    {Next::FewerPacks, "fewer_packs", true}, {Next::RopeQK, "rope_qk", true},
    {Next::FactorPack, "factor_pack", true}, {Next::CeWide, "ce_wide", false},
    {Next::AttnPack, "attn_pack", true},  {Next::DqkvPack, "dqkv_pack", true},
    {Next::CeBf16, "ce_bf16", true},        {Next::SideGrads, "side_grads", true},
    {Next::FlashWgmma, "flash_wgmma", true},
    {Next::DqWgmma, "dq_wgmma", true},       {Next::DkvWgmma, "dkv_wgmma", true},
    {Next::AsyncUpload, "async_upload", true},
    {Next::Pdl, "pdl", false},               {Next::DeltaRows, "delta_rows", false},
    {Next::RopeRows, "rope_rows", false}};

constexpr unsigned promoted_of_all() {
  unsigned set = 0;
  for (const Piece& pc : kAll)
    if (pc.promoted) set |= 1u << static_cast<unsigned>(pc.which);
  return set;
}
constexpr unsigned kPromoted = promoted_of_all();  // what every op asks when the variable is unset: a constant


// The set a value names, as bits of Next.
unsigned parse(const std::string& v) {
  unsigned set = 0;
  size_t at = 0;
  while (at <= v.size()) {
    size_t end = v.find(',', at);
    if (end == std::string::npos) end = v.size();
    std::string name = v.substr(at, end - at);
    at = end + 1;
    if (name.empty()) continue;
    const bool drop = name[0] == '-';
    if (drop) name.erase(0, 1);
    unsigned mask = 0;
    if (name == "1" || name == "all") {
      mask = ~0u;
    } else if (name == "default") {
      mask = kPromoted;
      if (drop) fail(ErrorCode::Arg, "INSTILL_CUDA_NEXT: '-default' is not a set to leave out (name the pieces)");
      set |= mask;
      continue;
    } else if (name == "none") {
      if (drop) fail(ErrorCode::Arg, "INSTILL_CUDA_NEXT: '-none' means nothing");
      set = 0;
      continue;
    } else {
      for (const Piece& pc : kAll)
        if (name == pc.name) mask = 1u << static_cast<unsigned>(pc.which);
    }
    if (mask == 0) {
      std::string known;
      for (const Piece& pc : kAll) known += std::string(known.empty() ? "" : ", ") + pc.name;
      fail(ErrorCode::Arg, "INSTILL_CUDA_NEXT: unknown name '", name, "' (known: 1 or all, none, default, ", known,
           "; -name leaves one out)");
    }
    set = drop ? set & ~mask : set | mask;
  }
  return set;
}

unsigned named_bits() {
  const char* e = std::getenv("INSTILL_CUDA_NEXT");
  if (!e || !*e) return kPromoted;
  static std::mutex mu;
  static std::string parsed_from;
  static unsigned bits = 0;
  std::lock_guard<std::mutex> lock(mu);
  if (parsed_from != e) {
    bits = parse(e);  // throws before remembering a bad value, so it throws again next time
    parsed_from = e;
  }
  return bits;
}


}  // namespace

bool next_enabled(Next which) { return (named_bits() >> static_cast<unsigned>(which)) & 1u; }

std::vector<std::string> next_enabled_names() {
  const unsigned bits = named_bits();
  std::vector<std::string> out;
  for (const Piece& pc : kAll)
    if ((bits >> static_cast<unsigned>(pc.which)) & 1u) out.emplace_back(pc.name);
  return out;
}

}  // namespace instill
