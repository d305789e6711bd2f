#include "cpu/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <type_traits>

#include "cpu/gemm_kernels.h"
#include "runtime/cpu_features.h"
#include "runtime/error.h"
#include "runtime/host_cache.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {
namespace {

// The micro-kernel for this ISA. With AVX512-BF16 and a bf16 operand (frozen bf16
// weights) the pair kernel runs: both operands in bf16, twice the multiply rate.
const GemmKernelInfo& kernel_for(Isa isa, const GemmTerm* terms, int nterms) {
#if defined(__x86_64__)
  bool any_bf16 = false;
  for (int t = 0; t < nterms; ++t) any_bf16 = any_bf16 || terms[t].a.dtype == DType::BF16 || terms[t].b.dtype == DType::BF16;
  switch (isa) {
    case Isa::Avx512Bf16:
      if (any_bf16) return gemm_kernel_avx512bf16;
      return gemm_kernel_avx512;
    case Isa::Avx512: return gemm_kernel_avx512;
    case Isa::Avx2: return gemm_kernel_avx2;
    case Isa::Portable: break;
  }
#else
  (void)isa;
  (void)terms;
  (void)nterms;
#endif
  return gemm_kernel_portable;
}

// Packing buffers come from the host block cache: a fresh mapping of a 9 MiB A panel
// costs more in first-touch page faults than packing it (see runtime/host_cache.h).
struct AlignedFloats {
  explicit AlignedFloats(size_t n) : bytes(std::max<size_t>(64, (n * sizeof(float) + 63) / 64 * 64)) {
    p = static_cast<float*>(host_alloc(bytes));
    if (!p) fail(ErrorCode::Alloc, "out of memory for GEMM packing buffers (", bytes, " bytes)");
  }
  ~AlignedFloats() { host_free(p, bytes); }
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  size_t bytes;
  float* p;
};

template <DType T>
inline float load(const void* p, int64_t idx) {
  if constexpr (T == DType::F32) {
    return static_cast<const float*>(p)[idx];
  } else if constexpr (T == DType::BF16) {
    return bf16_to_f32(static_cast<const uint16_t*>(p)[idx]);
  } else {
    return f16_to_f32(static_cast<const uint16_t*>(p)[idx]);
  }
}

// Writes rows [i0, i0+mr) x k [k0, k0+kc) of term-local op(A) into dst (kc x MR, k-major),
// scaled by alpha. Rows >= m are left as they are (the caller zero-fills).
template <DType T>
void pack_a_part(const GemmOperand& a, float alpha, int64_t i0, int64_t rows, int64_t k0, int64_t kc, int mr,
                 float* dst) {
  if (!a.trans) {
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t base = (i0 + i) * a.ld + k0;
      for (int64_t k = 0; k < kc; ++k) dst[k * mr + i] = alpha * load<T>(a.data, base + k);
    }
  } else {
    for (int64_t k = 0; k < kc; ++k) {
      const int64_t base = (k0 + k) * a.ld + i0;
      for (int64_t i = 0; i < rows; ++i) dst[k * mr + i] = alpha * load<T>(a.data, base + i);
    }
  }
}

template <DType T>
void pack_b_part(const GemmOperand& b, int64_t j0, int64_t cols, int64_t k0, int64_t kc, int nr, float* dst) {
  if (!b.trans) {
    for (int64_t k = 0; k < kc; ++k) {
      const int64_t base = (k0 + k) * b.ld + j0;
      for (int64_t j = 0; j < cols; ++j) dst[k * nr + j] = load<T>(b.data, base + j);
    }
  } else {
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t base = (j0 + j) * b.ld + k0;
      for (int64_t k = 0; k < kc; ++k) dst[k * nr + j] = load<T>(b.data, base + k);
    }
  }
}

template <typename Fn>
void by_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::F32: fn(std::integral_constant<DType, DType::F32>{}); return;
    case DType::BF16: fn(std::integral_constant<DType, DType::BF16>{}); return;
    case DType::F16: fn(std::integral_constant<DType, DType::F16>{}); return;
    default: fail(ErrorCode::DType, "GEMM operands must be f32, bf16 or f16, got ", dtype_name(t));
  }
}

// The K range [k0, k0+kc) of the concatenated terms, as (term, local k0, count, dst offset) pieces.
struct Piece {
  const GemmTerm* term;
  int64_t local_k0;
  int64_t count;
  int64_t offset;
};

int pieces_of(const GemmTerm* terms, int nterms, int64_t k0, int64_t kc, Piece* out) {
  int np = 0;
  int64_t start = 0;
  for (int t = 0; t < nterms; ++t) {
    const int64_t end = start + terms[t].k;
    const int64_t lo = std::max(start, k0), hi = std::min(end, k0 + kc);
    if (lo < hi) out[np++] = Piece{&terms[t], lo - start, hi - lo, lo - k0};
    start = end;
  }
  return np;
}

// Packs rows [i0, i0+rows) of the pieces' op(A) over the K block [0, kc) into one MR sliver
// (the kernel's A layout; rows past the edge are zeros).
void pack_a_sliver(const GemmKernelInfo& kern, const Piece* pieces, int np, int64_t i0, int64_t rows, int64_t kc,
                   float* dst) {
  const int mr = kern.mr;
  if (kern.pack_pairs) {
    uint16_t* d16 = reinterpret_cast<uint16_t*>(dst);
    // The pieces cover k in [0, kc): only missing rows and an odd kc's padding need zeros.
    if (rows < mr || (kc & 1)) std::fill(d16, d16 + (kc + 1) / 2 * mr * 2, uint16_t{0});
    for (int p = 0; p < np; ++p) {
      const Piece& pc_ = pieces[p];
      const GemmOperand& a = pc_.term->a;
      kern.pack_pairs_rows(a.data, static_cast<int32_t>(a.dtype), a.ld, a.trans ? 0 : 1, pc_.term->alpha, i0, rows,
                           pc_.local_k0, pc_.count, pc_.offset, static_cast<int>((kc + 1) / 2 * 2), d16);
    }
    return;
  }
  if (rows < mr) std::fill(dst, dst + mr * kc, 0.0f);
  for (int p = 0; p < np; ++p) {
    const Piece& pc_ = pieces[p];
    const GemmOperand& a = pc_.term->a;
    if (!a.trans && kern.pack_rows && rows == mr && mr % 8 == 0) {
      const int64_t off = i0 * a.ld + pc_.local_k0;
      kern.pack_rows(static_cast<const char*>(a.data) + off * static_cast<int64_t>(dtype_size(a.dtype)),
                     static_cast<int32_t>(a.dtype), a.ld, pc_.count, pc_.term->alpha, mr, dst + pc_.offset * mr);
      continue;
    }
    by_dtype(a.dtype, [&](auto tag) {
      pack_a_part<decltype(tag)::value>(a, pc_.term->alpha, i0, rows, pc_.local_k0, pc_.count, mr, dst + pc_.offset * mr);
    });
  }
}

// Packs columns [j0, j0+cols) of the pieces' op(B) over the K block [0, kc) into one NR sliver.
void pack_b_sliver(const GemmKernelInfo& kern, const Piece* pieces, int np, int64_t j0, int64_t cols, int64_t kc,
                   float* dst) {
  const int nr = kern.nr;
  if (kern.pack_pairs) {
    uint16_t* d16 = reinterpret_cast<uint16_t*>(dst);
    if (cols < nr || (kc & 1)) std::fill(d16, d16 + (kc + 1) / 2 * nr * 2, uint16_t{0});
    for (int p = 0; p < np; ++p) {
      const Piece& pc_ = pieces[p];
      const GemmOperand& b = pc_.term->b;
      kern.pack_pairs(b.data, static_cast<int32_t>(b.dtype), b.ld, b.trans ? 1 : 0, 1.0f, j0, cols, pc_.local_k0,
                      pc_.count, pc_.offset, nr, d16);
    }
    return;
  }
  if (cols < nr) std::fill(dst, dst + nr * kc, 0.0f);
  for (int p = 0; p < np; ++p) {
    const Piece& pc_ = pieces[p];
    const GemmOperand& b = pc_.term->b;
    if (b.trans && kern.pack_rows && cols == nr && nr % 8 == 0) {
      const int64_t off = j0 * b.ld + pc_.local_k0;
      kern.pack_rows(static_cast<const char*>(b.data) + off * static_cast<int64_t>(dtype_size(b.dtype)),
                     static_cast<int32_t>(b.dtype), b.ld, pc_.count, 1.0f, nr, dst + pc_.offset * nr);
      continue;
    }
    by_dtype(b.dtype, [&](auto tag) {
      pack_b_part<decltype(tag)::value>(b, j0, cols, pc_.local_k0, pc_.count, nr, dst + pc_.offset * nr);
    });
  }
}

// Narrow products: n, or m (then Cᵀ = op(B)ᵀ·op(A)ᵀ is computed), at most two vectors
// wide, with one f32 term and no bias: LoRA's rank-r products (x·Aᵀ, dy·B, dyᵀ·u, gᵀ·x).
// Packing the wide operand would cost more than multiplying it, so the narrow kernel
// reads it where it lies and only the narrow one (k x n) is packed. False: not narrow.
bool narrow_gemm(const GemmKernelInfo& kern, int64_t m, int64_t n, const GemmTerm* terms, int nterms, float beta,
                 float* c, int64_t ldc, const float* bias) {
  if (!kern.narrow || nterms != 1 || bias) return false;
  const GemmTerm& t = terms[0];
  if (t.a.dtype != DType::F32 || t.b.dtype != DType::F32) return false;
  const int64_t vl = kern.narrow_vl;
  // wide: the operand read in place, as op(wide) (rows x k); thin: the packed one, as op(thin) (k x cols).
  GemmOperand wide = t.a, thin = t.b;
  int64_t rows = m, cols = n;
  const bool c_trans = n > 2 * vl;
  if (c_trans) {
    if (m > 2 * vl) return false;
    wide = GemmOperand{t.b.data, DType::F32, t.b.ld, !t.b.trans};
    thin = GemmOperand{t.a.data, DType::F32, t.a.ld, !t.a.trans};
    rows = n;
    cols = m;
  }
  const int64_t k = t.k, w = cols <= vl ? vl : 2 * vl;
  AlignedFloats packed(static_cast<size_t>(k * w));
  const float* src = static_cast<const float*>(thin.data);
  parallel_range(k, [&](int64_t k0, int64_t k1) {
    for (int64_t kk = k0; kk < k1; ++kk)
      for (int64_t j = 0; j < w; ++j)
        packed.p[kk * w + j] = j < cols ? t.alpha * (thin.trans ? src[j * thin.ld + kk] : src[kk * thin.ld + j]) : 0.0f;
  });
  // Row chunks that are whole blocks of every ISA's kernel (6, 8, 12 or 16 rows), about four per thread.
  const int64_t chunk = std::max<int64_t>(48, (rows / (4 * num_threads()) + 47) / 48 * 48);
  const float* a = static_cast<const float*>(wide.data);
  parallel_for((rows + chunk - 1) / chunk, [&](int64_t task) {
    const int64_t i0 = task * chunk, count = std::min(chunk, rows - i0);
    const float* ai = wide.trans ? a + i0 : a + i0 * wide.ld;
    float* ci = c_trans ? c + i0 : c + i0 * ldc;
    kern.narrow(k, ai, wide.ld, wide.trans ? 1 : 0, packed.p, ci, ldc, c_trans ? 1 : 0, count, static_cast<int>(cols),
                beta);
  });
  return true;
}

}  // namespace

void gemm(int64_t m, int64_t n, const GemmTerm* terms, int nterms, float beta, float* c, int64_t ldc,
          const float* bias) {
  if (m <= 0 || n <= 0) return;
  int64_t ktotal = 0;
  for (int t = 0; t < nterms; ++t) ktotal += terms[t].k;
  if (ktotal == 0) {  // C = beta*C + bias
    parallel_range(m, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = 0; j < n; ++j) {
          float v = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
          c[i * ldc + j] = v + (bias ? bias[j] : 0.0f);
        }
    });
    return;
  }

  const GemmKernelInfo& kern = kernel_for(active_isa(), terms, nterms);
  if (narrow_gemm(kern, m, n, terms, nterms, beta, c, ldc, bias)) return;
  const int mr = kern.mr, nr = kern.nr;
  // K blocks of equal depth (576 = 3 x 192, not 256 + 256 + 64): a shallow last block
  // would pay a whole pass over C for little work. Multiples of 8 keep the packs vectorised.
  const int64_t k_blocks = (ktotal + kern.kc - 1) / kern.kc;
  const int64_t kKC = std::min<int64_t>(kern.kc, ((ktotal + k_blocks - 1) / k_blocks + 7) / 8 * 8);
  const int64_t mc = static_cast<int64_t>(mr) * std::max(1, 96 / mr);
  const int64_t nc = static_cast<int64_t>(nr) * 64;
  const int64_t m_slivers = (m + mr - 1) / mr;
  const int64_t n_panel = std::min(n, nc);
  const int64_t n_slivers_max = (n_panel + nr - 1) / nr;

  AlignedFloats apack(static_cast<size_t>(m_slivers * mr * kKC));
  AlignedFloats bpack(static_cast<size_t>(n_slivers_max * nr * kKC));
  Piece pieces[8];
  if (nterms > 8) fail(ErrorCode::Internal, "gemm: at most 8 terms");

  for (int64_t pc = 0; pc < ktotal; pc += kKC) {
    const int64_t kc = std::min(kKC, ktotal - pc);
    const int np = pieces_of(terms, nterms, pc, kc, pieces);
    const bool first = pc == 0;
    const bool last = pc + kc == ktotal;
    // A bf16 op(A) = A (rows along k) is already the pair kernel's A layout: its whole slivers
    // are read in place, not copied, when one unscaled term covers the block at an even k.
    const GemmOperand& a0 = pieces[0].term->a;
    const bool a_in_place = kern.pack_pairs && np == 1 && a0.dtype == DType::BF16 && !a0.trans &&
                            pieces[0].term->alpha == 1.0f && kc % 2 == 0 && pieces[0].local_k0 % 2 == 0 &&
                            a0.ld % 2 == 0 && reinterpret_cast<uintptr_t>(a0.data) % 4 == 0;

    parallel_range(m_slivers, [&](int64_t s0, int64_t s1) {
      for (int64_t s = s0; s < s1; ++s) {
        float* dst = apack.p + s * mr * kc;
        const int64_t i0 = s * mr, rows = std::min<int64_t>(mr, m - i0);
        if (a_in_place && rows == mr) continue;
        pack_a_sliver(kern, pieces, np, i0, rows, kc, dst);
      }
    });

    for (int64_t jc = 0; jc < n; jc += nc) {
      const int64_t ncur = std::min(nc, n - jc);
      const int64_t n_slivers = (ncur + nr - 1) / nr;
      parallel_range(n_slivers, [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s) {
          float* dst = bpack.p + s * nr * kc;
          const int64_t j0 = jc + s * nr, cols = std::min<int64_t>(nr, n - j0);
          pack_b_sliver(kern, pieces, np, j0, cols, kc, dst);
        }
      });

      // Tasks: MC row blocks x groups of column slivers, enough of them to keep every thread busy.
      // Few tasks that do not divide among the threads leave one idle at the end (11 row blocks of
      // a 1024-row product on 2 threads: a twelfth of the time), so the column slivers are split
      // further until the last round wastes at most 5%; more groups than needed cost A reloads.
      const int64_t m_blocks = (m + mc - 1) / mc;
      const int64_t threads = num_threads();
      int64_t want = std::max<int64_t>(1, 4 * threads / std::max<int64_t>(1, m_blocks));
      auto waste = [&](int64_t w) {
        const int64_t tasks = m_blocks * w, rounds = (tasks + threads - 1) / threads;
        return static_cast<double>(rounds * threads - tasks) / static_cast<double>(tasks);
      };
      while (want < n_slivers && waste(want) > 0.05) ++want;
      const int64_t group = std::max<int64_t>(1, (n_slivers + want - 1) / want);
      const int64_t n_groups = (n_slivers + group - 1) / group;
      parallel_for(m_blocks * n_groups, [&](int64_t task) {
        const int64_t ib = task / n_groups, g = task % n_groups;
        const int64_t i_end = std::min(m, (ib + 1) * mc);
        const int64_t s_end = std::min(n_slivers, (g + 1) * group);
        // An A sliver (MR x kc) stays in L1 while the B slivers of the group stream from L2.
        for (int64_t i0 = ib * mc; i0 < i_end; i0 += mr) {
          const int mrows = static_cast<int>(std::min<int64_t>(mr, m - i0));
          for (int64_t s = g * group; s < s_end; ++s) {
            const int64_t j0 = jc + s * nr;
            const int ncols = static_cast<int>(std::min<int64_t>(nr, n - j0));
            GemmEpilogue ep{first ? 1 : 0, beta, (last && bias) ? bias + j0 : nullptr, 0};
            const float* ap = apack.p + (i0 / mr) * mr * kc;
            if (a_in_place && mrows == mr) {
              ap = reinterpret_cast<const float*>(static_cast<const uint16_t*>(a0.data) + i0 * a0.ld + pieces[0].local_k0);
              ep.a_pairs_ld = a0.ld / 2;
            }
            kern.run(kc, ap, bpack.p + s * nr * kc, c + i0 * ldc + j0, ldc, mrows, ncols, &ep);
          }
        }
      });
    }
  }
}

// Packed layout of GemmPacked: K in blocks of the kernel's kc (the last one shorter);
// block k0 starts at k0 · (slivers · width) and holds one sliver after another, each
// kc x width as the kernel reads it (width = MR for a left operand, NR for a right one).
namespace {
const GemmKernelInfo& f32_kernel() {
  GemmTerm t{GemmOperand{nullptr, DType::F32, 0, false}, GemmOperand{nullptr, DType::F32, 0, false}, 0, 1.0f};
  return kernel_for(active_isa(), &t, 1);
}
}  // namespace

GemmPacked::~GemmPacked() {
  if (data_) host_free(data_, bytes_);
}

float* GemmPacked::reserve(size_t floats) {
  const size_t need = std::max<size_t>(64, (floats * sizeof(float) + 63) / 64 * 64);
  if (need > bytes_) {
    if (data_) host_free(data_, bytes_);
    data_ = static_cast<float*>(host_alloc(need));
    bytes_ = data_ ? need : 0;
    if (!data_) fail(ErrorCode::Alloc, "out of memory for a packed GEMM operand (", need, " bytes)");
  }
  return data_;
}

void GemmPacked::pack(bool left, int64_t outer, int64_t k, GemmOperand op, float alpha) {
  if (op.dtype != DType::F32) fail(ErrorCode::Internal, "GemmPacked: f32 operands only");
  const GemmKernelInfo& kern = f32_kernel();
  const int64_t w = left ? kern.mr : kern.nr;  // sliver width
  const int64_t slivers = (outer + w - 1) / w, width = slivers * w;
  float* dst = reserve(static_cast<size_t>(width * std::max<int64_t>(k, 1)));
  const GemmTerm term{op, op, k, alpha};
  for (int64_t k0 = 0; k0 < k; k0 += kern.kc) {
    const int64_t kc = std::min<int64_t>(kern.kc, k - k0);
    const Piece piece{&term, k0, kc, 0};
    for (int64_t s = 0; s < slivers; ++s) {
      float* sliver = dst + k0 * width + s * w * kc;
      const int64_t count = std::min<int64_t>(w, outer - s * w);
      if (left) pack_a_sliver(kern, &piece, 1, s * w, count, kc, sliver);
      else pack_b_sliver(kern, &piece, 1, s * w, count, kc, sliver);
    }
  }
  outer_ = outer;
  k_ = k;
  kernel_ = &kern;
  left_ = left;
}

void GemmPacked::pack_a(int64_t m, int64_t k, GemmOperand a, float alpha) { pack(true, m, k, a, alpha); }

void GemmPacked::pack_b(int64_t k, int64_t n, GemmOperand b) { pack(false, n, k, b, 1.0f); }

void gemm_packed(const GemmPacked& a, const GemmPacked& b, float beta, float* c, int64_t ldc) {
  if (!a.left_ || b.left_ || a.kernel_ != b.kernel_ || a.k_ != b.k_ || !a.kernel_) {
    fail(ErrorCode::Internal, "gemm_packed: needs a left and a right operand of the same depth and kernel");
  }
  const GemmKernelInfo& kern = *static_cast<const GemmKernelInfo*>(a.kernel_);
  const int64_t m = a.outer_, n = b.outer_, k = a.k_;
  const int mr = kern.mr, nr = kern.nr;
  const int64_t a_width = (m + mr - 1) / mr * mr, b_width = (n + nr - 1) / nr * nr;
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  for (int64_t k0 = 0; k0 < k; k0 += kern.kc) {
    const int64_t kc = std::min<int64_t>(kern.kc, k - k0);
    const GemmEpilogue ep{k0 == 0 ? 1 : 0, beta, nullptr, 0};
    for (int64_t i0 = 0; i0 < m; i0 += mr)
      for (int64_t j0 = 0; j0 < n; j0 += nr)
        kern.run(kc, a.data_ + k0 * a_width + i0 * kc, b.data_ + k0 * b_width + j0 * kc, c + i0 * ldc + j0, ldc,
                 static_cast<int>(std::min<int64_t>(mr, m - i0)), static_cast<int>(std::min<int64_t>(nr, n - j0)), &ep);
  }
}

}  // namespace cpu
}  // namespace instill
