// INSTILL_CUDA_NEXT `skinny` (waiting for a GPU run): LoRA's narrow products on the tensor cores, split over K.
//
//   C (M, N) = alpha · A·B    A (M, K) bf16, k contiguous (row stride lda);  N ≤ 64;  B (K, N) bf16, stored
//                             (N, K) ("trans": the A factors' rows) or (K, N) (the kept matrix's B columns)
//
// These are u = x·Aᵀ (the forward: lora_linear, lora_group) and g = dy·B (the backward's, s·g written into pd in
// bf16): a wide operand read once (x, dy: 8–64 MB a product in the 1B step) against a narrow one that stays in L2.
// Run 18's op profile (H100) puts them at 1.9 ms a step, ~2.5x what their bytes take at memory speed: with one
// output tile of 128 rows, M = 2048 keeps 16 of 132 SMs busy.
//
// The kernel: a CTA of 8 warps takes 128 rows and one chunk of K (grid: row tiles × splits of K, ~2 CTAs an SM).
// Each warp owns 16 rows and multiplies them on mma.sync m16n8k16 with the A fragments loaded straight from
// global memory, 16 bytes a lane: the k order inside each 32-wide slice is permuted, the same way for A and B
// (a lane's 8 consecutive k fill its a0a1/a4a5 registers of two mmas), which leaves every sum the same. B's
// slice for the CTA's 64-wide K block is staged in shared memory as (n, k), read back 16 bytes a lane; the next
// block's A and B are loaded into registers while this one multiplies.
// With one split, the CTA writes C. With more, each CTA writes its f32 partial tile to scratch and counts itself
// in at its row tile's counter; the last of a row tile's CTAs to arrive adds the partials in split order (so the
// result does not depend on which CTA came last: runs stay reproducible bit for bit) and writes C, then resets
// the counter for the next product. Sums run in another order than cuBLASLt's: within f32 rounding of it.
// That last sum is the kernel's tail: run 19's first version loaded one partial at a time (a dependent L2 round trip
// per split and element, ~20 us a product: +3.5 ms the step); it now loads 4 columns of 8 splits at once.
//
// gemm_skinny() takes a product only where all of this holds (else gemm() goes on as before): one K segment, bf16
// operands unscaled, A not transposed, its rows 16-byte aligned, beta 0, no bias, N ≤ 64, at most kMaxRowTiles
// row tiles. K's tail (K not a multiple of 8), B's unaligned rows and M's last rows are bounds-checked.
#include <algorithm>
#include <utility>

#include "cuda/attention_flash.cuh"  // mma_bf16, ldsm_x4_trans, lds_b_nmajor
#include "cuda/gemm.h"

namespace instill {
namespace cuda {

namespace {

constexpr int kSkRows = 128;            // rows of C a CTA, 16 a warp
constexpr int kSkThreads = 256;         // 8 warps
constexpr int kSkBK = 64;               // K a block (B staged in shared memory)
constexpr int kSkLds = kSkBK + 32;      // B's staged row (bf16): 192 bytes, so rows n and n+1 are 16 banks apart
constexpr int kMaxRowTiles = 4096;      // counters: M up to 524288 rows
constexpr int64_t kSkMinChunk = 256;    // K a split at least (its partial tile is ~NT/2.7 of the A bytes it reads)

__device__ unsigned int g_arrived[kMaxRowTiles];  // per row tile: CTAs done; zero between products

struct SkinnyArgs {
  const bf16* a;
  int64_t lda;
  const bf16* b;
  int64_t ldb;
  bool b_trans, b_vec;  // B stored (N, K); B's rows 16-byte aligned (vector loads)
  int64_t M, N, K, kchunk;
  int splits;
  float alpha;
  float* c;
  bf16* c16;
  int64_t ldc;
  bool c_trans;  // C (m, n) stored at n·ldc + m (a product computed as its transpose)
  float* part;   // (splits, row tiles, kSkRows, NT) f32 partials (splits > 1)
};

// Eight k of a row from k0 (k0 a multiple of 8): one 16-byte load, or element by element at K's end (zeros past it).
__device__ __forceinline__ uint4 load8(const bf16* row, int64_t k0, int64_t kend) {
  if (k0 + 8 <= kend) return __ldg(reinterpret_cast<const uint4*>(row + k0));
  union {
    bf16 h[8];
    uint4 v;
  } u;
#pragma unroll
  for (int e = 0; e < 8; ++e) u.h[e] = k0 + e < kend ? row[k0 + e] : __float2bfloat16(0.f);
  return u.v;
}

// B's (n, k) block [k0, k0 + kSkBK): 8·NT chunks of 8 bf16, at most 2 a thread, loaded into registers one block
// ahead (as A's are) and stored to shared memory at the block's start; zeros past N and K.
template <int NT>
constexpr int kBChunks = (8 * NT + kSkThreads - 1) / kSkThreads;

template <int NT>
__device__ __forceinline__ void load_b(const SkinnyArgs& p, int64_t k0, int64_t kend, uint4 (&r)[kBChunks<NT>]) {
  const bf16 zero = __float2bfloat16(0.f);
#pragma unroll
  for (int c = 0; c < kBChunks<NT>; ++c) {
    const int i = threadIdx.x + c * kSkThreads;
    union {
      bf16 h[8];
      uint4 v;
    } u;
    u.v = make_uint4(0, 0, 0, 0);
    if (i < 8 * NT) {
      if (p.b_trans) {  // B (n, k) at b[n·ldb + k]: chunk (n, 8 k)
        const int n = i / (kSkBK / 8), kk = (i % (kSkBK / 8)) * 8;
        if (n < p.N) {
          const bf16* row = p.b + n * p.ldb;
          if (p.b_vec) {
            u.v = load8(row, k0 + kk, kend);
          } else {
#pragma unroll
            for (int e = 0; e < 8; ++e) u.h[e] = k0 + kk + e < kend ? row[k0 + kk + e] : zero;
          }
        }
      } else {  // B (k, n) at b[k·ldb + n]: chunk (k, 8 n), consecutive threads on consecutive k
        const int kk = i % kSkBK, n0 = (i / kSkBK) * 8;
        const int64_t k = k0 + kk;
        const bf16* row = p.b + k * p.ldb;
        if (k < kend && p.b_vec && n0 + 8 <= p.N) {
          u.v = __ldg(reinterpret_cast<const uint4*>(row + n0));
        } else if (k < kend) {
#pragma unroll
          for (int e = 0; e < 8; ++e) u.h[e] = n0 + e < p.N ? row[n0 + e] : zero;
        }
      }
    }
    r[c] = u.v;
  }
}

template <int NT, int LDS>
__device__ __forceinline__ void store_b(const SkinnyArgs& p, const uint4 (&r)[kBChunks<NT>], bf16 (*Bs)[LDS]) {
#pragma unroll
  for (int c = 0; c < kBChunks<NT>; ++c) {
    const int i = threadIdx.x + c * kSkThreads;
    if (i >= 8 * NT) continue;
    if (p.b_trans) {
      *reinterpret_cast<uint4*>(&Bs[i / (kSkBK / 8)][(i % (kSkBK / 8)) * 8]) = r[c];
    } else {
      union {
        bf16 h[8];
        uint4 v;
      } u;
      u.v = r[c];
      const int kk = i % kSkBK, n0 = (i / kSkBK) * 8;
#pragma unroll
      for (int e = 0; e < 8; ++e) Bs[n0 + e][kk] = u.h[e];
    }
  }
}

__device__ __forceinline__ void store_c(const SkinnyArgs& p, int64_t m, int64_t n, float v) {
  const int64_t i = p.c_trans ? n * p.ldc + m : m * p.ldc + n;
  if (p.c16) p.c16[i] = __float2bfloat16(v);
  else p.c[i] = v;
}

// The end of both kernels: C's fragments (acc[j][0..1] at row r0, columns 8j + 2q, +1; acc[j][2..3] at row r0 + 8)
// written as alpha·acc with one split; with more, the CTA's partial tile to scratch, and the last CTA of the row tile
// to arrive adds every split's partial in split order and writes C.
template <int NT>
__device__ __forceinline__ void finish_tile(const SkinnyArgs& p, float (&acc)[NT / 8][4], int64_t tile, int split,
                                            int64_t r0, int q, int lr) {
  __shared__ bool last;
  if (p.splits == 1) {
#pragma unroll
    for (int j = 0; j < NT / 8; ++j) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t m = r0 + 8 * h;
        if (m >= p.M) continue;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t n = 8 * j + 2 * q + e;
          if (n < p.N) store_c(p, m, n, p.alpha * acc[j][2 * h + e]);
        }
      }
    }
    return;
  }
  const int64_t tiles = gridDim.x;
  float* mine = p.part + (split * tiles + tile) * kSkRows * NT;
#pragma unroll
  for (int j = 0; j < NT / 8; ++j) {
    *reinterpret_cast<float2*>(mine + lr * NT + 8 * j + 2 * q) = make_float2(acc[j][0], acc[j][1]);
    *reinterpret_cast<float2*>(mine + (lr + 8) * NT + 8 * j + 2 * q) = make_float2(acc[j][2], acc[j][3]);
  }
  __threadfence();  // the partial is visible device-wide before the count says so
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&g_arrived[tile], 1u) == static_cast<unsigned>(p.splits - 1);
  __syncthreads();
  if (!last) return;
  __threadfence();
  // 4 columns a thread at a time, the splits' partials loaded kBatch at once (independent loads, so the tail is a
  // few L2 round trips, not one a split) and added in split order
  constexpr int kBatch = 8;
  const int64_t stride4 = tiles * kSkRows * NT / 4;  // float4s between one split's tile and the next's
  const float4* base = reinterpret_cast<const float4*>(p.part + tile * kSkRows * NT);
  for (int i = threadIdx.x; i < kSkRows * NT / 4; i += kSkThreads) {
    float acc4[4] = {0.f, 0.f, 0.f, 0.f};
    for (int sp0 = 0; sp0 < p.splits; sp0 += kBatch) {
      float4 v[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; ++b)
        if (sp0 + b < p.splits) v[b] = __ldcg(base + (sp0 + b) * stride4 + i);  // L2, not L1
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        if (sp0 + b < p.splits) {
          acc4[0] += v[b].x; acc4[1] += v[b].y; acc4[2] += v[b].z; acc4[3] += v[b].w;
        }
      }
    }
    const int lm = 4 * i / NT, n0 = 4 * i % NT;  // NT a multiple of 8: the 4 share a row
    const int64_t m = tile * kSkRows + lm;
    if (m >= p.M) continue;
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (n0 + e < p.N) store_c(p, m, n0 + e, p.alpha * acc4[e]);
  }
  if (threadIdx.x == 0) g_arrived[tile] = 0;
}

template <int NT>
__global__ void __launch_bounds__(kSkThreads) skinny_kernel(const SkinnyArgs p) {
  __shared__ __align__(16) bf16 Bs[NT][kSkLds];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, q = lane & 3;
  const int64_t tile = blockIdx.x;
  const int split = blockIdx.y;
  const int64_t kbeg = split * p.kchunk, kend = min(p.K, kbeg + p.kchunk);
  const int64_t r0 = tile * kSkRows + warp * 16 + gq;  // this lane's rows: r0 and r0 + 8
  // rows past M read row M - 1 (in bounds; their sums are never written)
  const bf16* row0 = p.a + min(r0, p.M - 1) * p.lda;
  const bf16* row1 = p.a + min(r0 + 8, p.M - 1) * p.lda;

  float acc[NT / 8][4];
#pragma unroll
  for (int j = 0; j < NT / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;

  // A fragments of a K block: rows r0, r0 + 8 at k = k0 + 32·c + 8·q (c = 0, 1), prefetched one block ahead
  uint4 cur[4], nxt[4], bregs[kBChunks<NT>];
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    cur[2 * c] = load8(row0, kbeg + 32 * c + 8 * q, kend);
    cur[2 * c + 1] = load8(row1, kbeg + 32 * c + 8 * q, kend);
  }
  load_b<NT>(p, kbeg, kend, bregs);
  for (int64_t k0 = kbeg; k0 < kend; k0 += kSkBK) {
    __syncthreads();  // the last block's B read
    store_b<NT, kSkLds>(p, bregs, Bs);
    __syncthreads();
    const int64_t kn = k0 + kSkBK;
    if (kn < kend) {  // the next block's A and B in flight while this one multiplies
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        nxt[2 * c] = load8(row0, kn + 32 * c + 8 * q, kend);
        nxt[2 * c + 1] = load8(row1, kn + 32 * c + 8 * q, kend);
      }
      load_b<NT>(p, kn, kend, bregs);
    }
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      // m16n8k16's A registers: a0a1 (row gq, k 2q..), a2a3 (row gq + 8), a4a5 (row gq, k 8 + 2q..), a6a7: the
      // lane's 8 loaded k fill slots 2q and 8 + 2q of two mmas, and B's registers take the same k from Bs.
      const uint4 w0 = cur[2 * c], w1 = cur[2 * c + 1];
      const uint32_t a1[4] = {w0.x, w1.x, w0.y, w1.y};
      const uint32_t a2[4] = {w0.z, w1.z, w0.w, w1.w};
#pragma unroll
      for (int j = 0; j < NT / 8; ++j) {
        const uint4 bv = *reinterpret_cast<const uint4*>(&Bs[j * 8 + gq][32 * c + 8 * q]);
        mma_bf16(acc[j], a1, bv.x, bv.y);
        mma_bf16(acc[j], a2, bv.z, bv.w);
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) cur[i] = nxt[i];
  }

  finish_tile<NT>(p, acc, tile, split, r0, q, warp * 16 + gq);
}

// A stored (K, M) (m contiguous: dy for dB = s·dyᵀ·u, x for dA's transpose xᵀ·(s·g)): a K block of A's tile,
// (kSkBK, kSkRows), loaded 16 bytes a thread along m into registers, then stored to shared memory, where ldmatrix.trans
// gives each warp its m16n8k16 A fragments; B staged as (n, k) as above, its fragments read 4 bytes at a time.
constexpr int kSkLdaT = kSkRows + 8;  // A's staged row (bf16): 272 bytes, ldmatrix's 8 rows on distinct banks
constexpr int kSkLdbT = kSkBK + 8;    // B's: 144 bytes, a warp's 4-byte reads (8 n × 4 k pairs) on 32 banks
constexpr int kSkChunksT = kSkBK * kSkRows / 8 / kSkThreads;  // 16-byte chunks of A a thread a block: 4

// A's chunk c of the K block at k0 (row kk, columns 8·cc..) for this thread: zeros past K and M.
__device__ __forceinline__ uint4 load_at(const SkinnyArgs& p, int64_t tile, int64_t k0, int64_t kend, int c) {
  const int i = threadIdx.x + c * kSkThreads;
  const int kk = i / (kSkRows / 8), mm = (i % (kSkRows / 8)) * 8;
  const int64_t k = k0 + kk, m = tile * kSkRows + mm;
  if (k >= kend) return make_uint4(0, 0, 0, 0);
  const bf16* src = p.a + k * p.lda + m;
  if (m + 8 <= p.M) return __ldg(reinterpret_cast<const uint4*>(src));
  union {
    bf16 h[8];
    uint4 v;
  } u;
#pragma unroll
  for (int e = 0; e < 8; ++e) u.h[e] = m + e < p.M ? src[e] : __float2bfloat16(0.f);
  return u.v;
}

template <int NT>
__global__ void __launch_bounds__(kSkThreads) skinny_t_kernel(const SkinnyArgs p) {
  __shared__ __align__(16) bf16 As[kSkBK][kSkLdaT];  // (k, m)
  __shared__ __align__(16) bf16 Bs[NT][kSkLdbT];     // (n, k)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, q = lane & 3;
  const int64_t tile = blockIdx.x;
  const int split = blockIdx.y;
  const int64_t kbeg = split * p.kchunk, kend = min(p.K, kbeg + p.kchunk);
  const int64_t r0 = tile * kSkRows + warp * 16 + gq;

  float acc[NT / 8][4];
#pragma unroll
  for (int j = 0; j < NT / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  uint4 regs[kSkChunksT], bregs[kBChunks<NT>];
#pragma unroll
  for (int c = 0; c < kSkChunksT; ++c) regs[c] = load_at(p, tile, kbeg, kend, c);
  load_b<NT>(p, kbeg, kend, bregs);
  const int a_off = lds_b_nmajor<kSkLdaT>(lane) + warp * 16;  // ldmatrix.trans rows: k 0..15, m 16·warp..+15
  for (int64_t k0 = kbeg; k0 < kend; k0 += kSkBK) {
    __syncthreads();  // the last block's reads of As and Bs
#pragma unroll
    for (int c = 0; c < kSkChunksT; ++c) {
      const int i = threadIdx.x + c * kSkThreads;
      *reinterpret_cast<uint4*>(&As[i / (kSkRows / 8)][(i % (kSkRows / 8)) * 8]) = regs[c];
    }
    store_b<NT, kSkLdbT>(p, bregs, Bs);
    __syncthreads();
    const int64_t kn = k0 + kSkBK;
    if (kn < kend) {  // the next block's A and B in flight while this one multiplies
#pragma unroll
      for (int c = 0; c < kSkChunksT; ++c) regs[c] = load_at(p, tile, kn, kend, c);
      load_b<NT>(p, kn, kend, bregs);
    }
#pragma unroll
    for (int ks = 0; ks < kSkBK; ks += 16) {
      uint32_t a[4];
      ldsm_x4_trans(smem_addr(&As[0][0] + ks * kSkLdaT + a_off), a);
#pragma unroll
      for (int j = 0; j < NT / 8; ++j) {
        const bf16* b = &Bs[j * 8 + gq][ks + 2 * q];
        mma_bf16(acc[j], a, *reinterpret_cast<const uint32_t*>(b), *reinterpret_cast<const uint32_t*>(b + 8));
      }
    }
  }
  finish_tile<NT>(p, acc, tile, split, r0, q, warp * 16 + gq);
}

template <template <int> class K>
void launch_nt(int nt, const SkinnyArgs& p, dim3 grid) {
  switch (nt) {
    case 8: K<8>::run(p, grid); break;
    case 16: K<16>::run(p, grid); break;
    case 24: K<24>::run(p, grid); break;
    case 32: K<32>::run(p, grid); break;
    case 40: K<40>::run(p, grid); break;
    case 48: K<48>::run(p, grid); break;
    case 56: K<56>::run(p, grid); break;
    default: K<64>::run(p, grid); break;
  }
}
template <int NT>
struct AlongK {  // A stored (M, K)
  static void run(const SkinnyArgs& p, dim3 grid) {
    skinny_kernel<NT><<<grid, kSkThreads, 0, stream()>>>(p);
    check_launch("skinny_kernel");
  }
};
template <int NT>
struct AlongM {  // A stored (K, M)
  static void run(const SkinnyArgs& p, dim3 grid) {
    skinny_t_kernel<NT><<<grid, kSkThreads, 0, stream()>>>(p);
    check_launch("skinny_t_kernel");
  }
};

}  // namespace

bool gemm_skinny(const GemmArgs& g) {
  if (!next_kernels(Next::Skinny)) return false;
  if (g.K[1] != 0 || g.K[0] <= 0 || g.beta != 0.f || g.bias || g.c_in) return false;
  GemmOperand a = g.a[0], b = g.b[0];
  if (a.e != Elem::BF16 || b.e != Elem::BF16 || a.scale != 1.f || b.scale != 1.f) return false;
  int64_t M = g.M, N = g.N;
  bool c_trans = false;
  if (N > 64) {  // a narrow M (dA = s·gᵀ·x) instead: Cᵀ (N, M) = Bᵀ·Aᵀ, written transposed; Bᵀ's element (n, k) is
                 // B's (k, n) where it lies, so each operand swaps sides with its transposition flipped
    if (M > 64) return false;
    std::swap(M, N);
    std::swap(a, b);
    a.trans = !a.trans;
    b.trans = !b.trans;
    c_trans = true;
  }
  if (!aligned(a.p, 16) || a.ld % 8 != 0) return false;
  const int64_t tiles = (M + kSkRows - 1) / kSkRows;
  if (tiles > kMaxRowTiles) return false;

  const OpPart part("narrow product, split K (next)", Device::CUDA);
  SkinnyArgs p;
  p.a = static_cast<const bf16*>(a.p); p.lda = a.ld;
  p.b = static_cast<const bf16*>(b.p); p.ldb = b.ld;
  p.b_trans = b.trans;
  p.b_vec = aligned(b.p, 16) && b.ld % 8 == 0;
  p.M = M; p.N = N; p.K = g.K[0];
  p.alpha = g.alpha;
  p.c = g.c; p.c16 = g.c16; p.ldc = g.ldc; p.c_trans = c_trans;
  // splits: ~2 CTAs an SM, each over at least kSkMinChunk of K (rounded to whole K blocks)
  const int64_t want = std::max<int64_t>(1, (2 * sm_count() + tiles - 1) / tiles);
  const int64_t most = std::max<int64_t>(1, (p.K + kSkMinChunk - 1) / kSkMinChunk);
  const int64_t splits0 = std::min(want, most);
  p.kchunk = round_up((p.K + splits0 - 1) / splits0, kSkBK);
  p.splits = static_cast<int>((p.K + p.kchunk - 1) / p.kchunk);
  const int nt = static_cast<int>(round_up(N, 8));
  Tensor part_buf;
  p.part = nullptr;
  if (p.splits > 1) {
    part_buf = Tensor::empty({p.splits * tiles * kSkRows * nt}, DType::F32, Device::CUDA);
    p.part = part_buf.data_as<float>();
  }
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.splits));
  if (a.trans) launch_nt<AlongM>(nt, p, grid);
  else launch_nt<AlongK>(nt, p, grid);
  return true;
}

}  // namespace cuda
}  // namespace instill
