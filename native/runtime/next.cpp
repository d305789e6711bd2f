#include "runtime/next.h"

#include <cstdlib>
#include <mutex>

#include "runtime/error.h"

namespace instill {

namespace {

constexpr Next kAll[] = {Next::Narrow,   Next::PackWB,   Next::FlashMT, Next::RopeToken,
                         Next::AttnPrep, Next::Residual, Next::WbCache, Next::FlashOcc, Next::Bf16Beta};

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
    } else {
      for (Next n : kAll)
        if (name == next_name(n)) mask = 1u << static_cast<unsigned>(n);
    }
    if (mask == 0) {
      std::string known;
      for (Next n : kAll) known += std::string(known.empty() ? "" : ", ") + next_name(n);
      fail(ErrorCode::Arg, "INSTILL_CUDA_NEXT: unknown name '", name, "' (known: 1 or all, ", known,
           "; -name leaves one out)");
    }
    set = drop ? set & ~mask : set | mask;
  }
  return set;
}

unsigned enabled_bits() {
  const char* e = std::getenv("INSTILL_CUDA_NEXT");
  if (!e || !*e) return 0;
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

const char* next_name(Next which) {
  switch (which) {
    case Next::Narrow: return "narrow";
    case Next::PackWB: return "pack_wb";
    case Next::FlashMT: return "flash_mt";
    case Next::RopeToken: return "rope_token";
    case Next::AttnPrep: return "attn_prep";
    case Next::Residual: return "residual";
    case Next::WbCache: return "wb_cache";
    case Next::FlashOcc: return "flash_occ";
    case Next::Bf16Beta: return "bf16_beta";
  }
  return "?";
}

bool next_enabled(Next which) { return (enabled_bits() >> static_cast<unsigned>(which)) & 1u; }

std::vector<std::string> next_enabled_names() {
  const unsigned bits = enabled_bits();
  std::vector<std::string> out;
  for (Next n : kAll)
    if ((bits >> static_cast<unsigned>(n)) & 1u) out.emplace_back(next_name(n));
  return out;
}

}  // namespace instill
