// AVX512-BF16 pair micro-kernel (compiled with -mavx512bf16): 8 x 32 tile of f32
// accumulators fed by vdpbf16ps, two k per instruction, so twice the multiply
// rate of the f32 FMA kernel. Used when an operand is bf16 (frozen bf16 weights)
// and the CPU has AVX512-BF16; the other operand is rounded to bf16 while
// packing, as autocast does. See gemm_kernels.h for the pair layout.
#include <immintrin.h>

#include "cpu/gemm_kernels.h"
#include "cpu/gemm_pack.inc"

namespace {

constexpr int kMR = 8;
constexpr int kNR = 32;

inline uint16_t to_bf16(float f) {
  // round to nearest even, quiet NaN (the same rule as vcvtneps2bf16)
  uint32_t bits;
  __builtin_memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// 8 consecutive x of op(src), x-major, as bf16 pairs for pair indices [p, p+8) -> 8 ymm of pairs, transposed
// so that r[q] holds the pairs of the 8 x at pair p+q.
inline void load_pairs_8x8(const void* src, int32_t dtype, int64_t ld, int64_t x, int64_t k, float alpha, __m256 r[8]) {
  const __m512 va = _mm512_set1_ps(alpha);
  for (int i = 0; i < 8; ++i) {
    const int64_t idx = (x + i) * ld + k;
    if (dtype == 1 && alpha == 1.0f) {
      r[i] = _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + idx)));
    } else {
      __m512 v;
      if (dtype == 0) {
        v = _mm512_loadu_ps(static_cast<const float*>(src) + idx);
      } else if (dtype == 1) {
        __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + idx));
        v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
      } else {
        v = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + idx)));
      }
      r[i] = _mm256_castsi256_ps(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_mul_ps(v, va))));
    }
  }
  transpose8x8(r);
}

float load_scalar(const void* src, int32_t dtype, int64_t idx) { return load1(src, dtype, idx); }

void pack_pairs(const void* src, int32_t dtype, int64_t ld, int32_t x_major, float alpha, int64_t x0, int64_t nx,
                int64_t k0, int64_t kc, int64_t koff, int width, uint16_t* dst) {
  int64_t k = 0;
  if (x_major && (koff & 1) == 0 && nx % 8 == 0) {
    // Fast path: 8 x at a time, 16 k (8 pairs) at a time, through an 8 x 8 transpose of 32-bit pairs.
    for (; k + 16 <= kc; k += 16) {
      for (int64_t xg = 0; xg < nx; xg += 8) {
        __m256 r[8];
        load_pairs_8x8(src, dtype, ld, x0 + xg, k0 + k, alpha, r);
        const int64_t p0 = (koff + k) / 2;
        for (int q = 0; q < 8; ++q) {
          _mm256_storeu_ps(reinterpret_cast<float*>(dst + ((p0 + q) * width + xg) * 2), r[q]);
        }
      }
    }
  } else if (!x_major && (koff & 1) == 0) {
    // k-major source (rows of k, x contiguous): interleave rows k and k+1, 16 x at a time.
    const __m512 va = _mm512_set1_ps(alpha);
    for (; k + 2 <= kc; k += 2) {
      const int64_t p = (koff + k) / 2;
      int64_t x = 0;
      for (; x + 16 <= nx; x += 16) {
        __m512i lo, hi;
        const int64_t i0 = (k0 + k) * ld + x0 + x, i1 = i0 + ld;
        if (dtype == 1 && alpha == 1.0f) {
          lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + i0)));
          hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + i1)));
        } else {
          __m512 a, b;
          if (dtype == 0) {
            a = _mm512_loadu_ps(static_cast<const float*>(src) + i0);
            b = _mm512_loadu_ps(static_cast<const float*>(src) + i1);
          } else if (dtype == 1) {
            a = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + i0))), 16));
            b = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + i1))), 16));
          } else {
            a = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + i0)));
            b = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + i1)));
          }
          lo = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_mul_ps(a, va))));
          hi = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_mul_ps(b, va))));
        }
        _mm512_storeu_si512(dst + (p * width + x) * 2, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
      }
      for (; x < nx; ++x) {
        const int64_t i0 = (k0 + k) * ld + x0 + x;
        dst[(p * width + x) * 2] = to_bf16(alpha * load_scalar(src, dtype, i0));
        dst[(p * width + x) * 2 + 1] = to_bf16(alpha * load_scalar(src, dtype, i0 + ld));
      }
    }
  }
  // Whatever the fast paths left: one element at a time.
  for (; k < kc; ++k) {
    const int64_t kk = koff + k;
    for (int64_t x = 0; x < nx; ++x) {
      const int64_t idx = x_major ? (x0 + x) * ld + (k0 + k) : (k0 + k) * ld + (x0 + x);
      dst[((kk >> 1) * width + x) * 2 + (kk & 1)] = to_bf16(alpha * load_scalar(src, dtype, idx));
    }
  }
}

// A rows for the pair kernel: dst[x*width + kk] (bf16, kk = koff + k), converting and scaling.
void pack_pairs_rows(const void* src, int32_t dtype, int64_t ld, int32_t x_major, float alpha, int64_t x0, int64_t nx,
                     int64_t k0, int64_t kc, int64_t koff, int width, uint16_t* dst) {
  const __m512 va = _mm512_set1_ps(alpha);
  for (int64_t x = 0; x < nx; ++x) {
    uint16_t* d = dst + x * width + koff;
    int64_t k = 0;
    if (x_major) {
      const int64_t base = (x0 + x) * ld + k0;
      if (dtype == 1 && alpha == 1.0f) {
        __builtin_memcpy(d, static_cast<const uint16_t*>(src) + base, static_cast<size_t>(kc) * 2);
        continue;
      }
      for (; k + 16 <= kc; k += 16) {
        __m512 v;
        if (dtype == 0) {
          v = _mm512_loadu_ps(static_cast<const float*>(src) + base + k);
        } else if (dtype == 1) {
          v = _mm512_castsi512_ps(_mm512_slli_epi32(
              _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + base + k))), 16));
        } else {
          v = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + base + k)));
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + k), reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_mul_ps(v, va))));
      }
      for (; k < kc; ++k) d[k] = to_bf16(alpha * load_scalar(src, dtype, base + k));
    } else {
      for (; k < kc; ++k) d[k] = to_bf16(alpha * load_scalar(src, dtype, (k0 + k) * ld + x0 + x));
    }
  }
}

void micro_kernel(int64_t kc, const float* a_, const float* b_, float* c, int64_t ldc, int m, int n,
                  const instill::cpu::GemmEpilogue* ep) {
  const uint32_t* a = reinterpret_cast<const uint32_t*>(a_);
  const __m512i* b = reinterpret_cast<const __m512i*>(b_);
  __m512 acc[kMR][2];
  for (int i = 0; i < kMR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  const int64_t pairs = (kc + 1) / 2;
  const uint32_t* arow[kMR];
  const int64_t lda = ep->a_pairs_ld ? ep->a_pairs_ld : pairs;
  for (int i = 0; i < kMR; ++i) arow[i] = a + i * lda;
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_load_si512(b + 2 * p));
    const __m512bh b1 = reinterpret_cast<__m512bh>(_mm512_load_si512(b + 2 * p + 1));
#pragma GCC unroll 8
    for (int i = 0; i < kMR; ++i) {
      const __m512bh av = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(arow[i][p])));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, b1);
    }
  }
  const bool first = ep->first != 0;
  const float beta = ep->beta;
  const float* bias = ep->bias;
  if (m == kMR && n == kNR) {
    for (int i = 0; i < kMR; ++i) {
      for (int j = 0; j < 2; ++j) {
        float* cp = c + i * ldc + j * 16;
        __m512 v = acc[i][j];
        if (!first) {
          v = _mm512_add_ps(v, _mm512_loadu_ps(cp));
        } else if (beta != 0.0f) {
          v = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_loadu_ps(cp), v);
        }
        if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + j * 16));
        _mm512_storeu_ps(cp, v);
      }
    }
    return;
  }
  float tile[kMR][kNR];
  for (int i = 0; i < kMR; ++i) {
    _mm512_storeu_ps(&tile[i][0], acc[i][0]);
    _mm512_storeu_ps(&tile[i][16], acc[i][1]);
  }
  for (int i = 0; i < m; ++i) {
    float* crow = c + i * ldc;
    for (int j = 0; j < n; ++j) {
      float v = tile[i][j];
      if (!first) {
        v += crow[j];
      } else if (beta != 0.0f) {
        v += beta * crow[j];
      }
      if (bias) v += bias[j];
      crow[j] = v;
    }
  }
}

}  // namespace

namespace instill {
namespace cpu {
// K blocks up to 768 deep: the A sliver (8 rows x 384 pairs, 12 KiB) still sits in L1, and the 576-deep
// products of the SmolLM2 shapes run as one block (C written once); whole-process A/B of five bf16
// GEMM shapes against 512: 1.4% faster.
extern const GemmKernelInfo gemm_kernel_avx512bf16 = {kMR, kNR, 768, &micro_kernel, nullptr, &pack_pairs, &pack_pairs_rows,
                                                    0,   nullptr};  // all-f32 narrow products run on gemm_kernel_avx512
}  // namespace cpu
}  // namespace instill
