// mma.sync m16n8k16 with bf16 operands (sm_80 and later), for the kernels that issue it themselves: the flash
// attention kernels (attention_flash.cuh). Fragment layouts (g = lane / 4, t = lane % 4): A (16 × 16, row-major)
// a0 = (g, 2t..2t+1), a1 = (g + 8, 2t..), a2 = (g, 2t + 8..), a3 = (g + 8, 2t + 8..);
// B (16 × 8, k-major per column) b0 = (k 2t..2t+1, n g), b1 = (k 2t + 8.., n g); C (16 × 8) c0, c1 = (g, 2t..2t+1),
// c2, c3 = (g + 8, 2t..2t+1). Internal linkage, as attention_flash.cuh's.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace instill {
namespace cuda {
namespace {

// c += a · b (16×8 += 16×16 · 16×8), bf16 operands, f32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as bf16x2, lo in the low half (the lower column index).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

}  // namespace
}  // namespace cuda
}  // namespace instill
