// What this CPU can run, and which instruction set the kernels use.
//
// The binary is built for baseline x86-64 (or arm64); the SIMD kernels are
// compiled per ISA in their own translation units and chosen here at run time.
// Detection asks CPUID and, for AVX/AVX-512, XGETBV (the OS must save the wider
// registers). INSTILL_ISA=portable|avx2|avx512|avx512bf16 picks a lower ISA
// (for tests and benchmarks); asking for one the CPU lacks is an error.
#pragma once

#include <string>
#include <vector>

namespace instill {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512dq = false;
  bool avx512vl = false;
  bool avx512bf16 = false;
};

enum class Isa { Portable = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3 };

const CpuFeatures& cpu_features();
const char* isa_name(Isa isa);
Isa parse_isa(const std::string& name);  // throws E_ARG

// Every ISA this CPU can run, lowest first.
std::vector<Isa> supported_isas();
// The ISA kernels use now: the best supported, or INSTILL_ISA / set_active_isa.
Isa active_isa();
// Throws E_UNSUPPORTED if the CPU cannot run `isa`.
void set_active_isa(Isa isa);

}  // namespace instill
