#include "runtime/cpu_features.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define INSTILL_X86 1
#endif

#include "runtime/error.h"

namespace instill {
namespace {

#if INSTILL_X86
uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if INSTILL_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  bool osxsave = (c >> 27) & 1;
  bool avx = (c >> 28) & 1;
  f.fma = (c >> 12) & 1;
  f.f16c = (c >> 29) & 1;
  uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  bool os_avx = (xcr0 & 0x6) == 0x6;             // XMM and YMM state
  bool os_avx512 = (xcr0 & 0xe6) == 0xe6;        // plus opmask, ZMM_Hi256, Hi16_ZMM
  if (!avx || !os_avx) {
    f.fma = f.f16c = false;
    return f;
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = (b >> 5) & 1;
    if (os_avx512) {
      f.avx512f = (b >> 16) & 1;
      f.avx512dq = (b >> 17) & 1;
      f.avx512bw = (b >> 30) & 1;
      f.avx512vl = (b >> 31) & 1;
    }
  }
  if (os_avx512 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512bf16 = (a >> 5) & 1;
#endif
  return f;
}

bool can_run(const CpuFeatures& f, Isa isa) {
  switch (isa) {
    case Isa::Portable: return true;
    case Isa::Avx2: return f.avx2 && f.fma && f.f16c;
    case Isa::Avx512: return f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl;
    case Isa::Avx512Bf16: return can_run(f, Isa::Avx512) && f.avx512bf16;
  }
  return false;
}

Isa best_isa() {
  Isa best = Isa::Portable;
  for (Isa i : supported_isas()) best = i;
  return best;
}

std::atomic<int> g_active{-1};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Portable: return "portable";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Bf16: return "avx512bf16";
  }
  return "?";
}

Isa parse_isa(const std::string& name) {
  for (Isa i : {Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16}) {
    if (name == isa_name(i)) return i;
  }
  fail(ErrorCode::Arg, "unknown ISA '", name, "': expected portable, avx2, avx512 or avx512bf16");
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
#if INSTILL_X86
  for (Isa i : {Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16}) {
    if (can_run(cpu_features(), i)) out.push_back(i);
  }
#else
  out.push_back(Isa::Portable);
#endif
  return out;
}

Isa active_isa() {
  int v = g_active.load(std::memory_order_relaxed);
  if (v >= 0) return static_cast<Isa>(v);
  Isa chosen = best_isa();
  if (const char* env = std::getenv("INSTILL_ISA")) {
    try {
      Isa wanted = parse_isa(env);
      bool ok = false;
      for (Isa i : supported_isas()) ok = ok || i == wanted;
      if (ok) chosen = wanted;
    } catch (const Error&) {
      // an unknown INSTILL_ISA falls back to the best ISA; setIsa() reports errors
    }
  }
  g_active.store(static_cast<int>(chosen));
  return chosen;
}

void set_active_isa(Isa isa) {
  for (Isa i : supported_isas()) {
    if (i == isa) {
      g_active.store(static_cast<int>(isa));
      return;
    }
  }
  fail(ErrorCode::Unsupported, "this CPU cannot run ISA '", isa_name(isa), "'");
}

}  // namespace instill
