// Tiled bf16 tensor-core GEMM over mixed-dtype operands (see gemm.h).
//
// The portable sm_80 baseline: 64×64 output tile per block of 4 warps, each
// warp a 32×32 quadrant as 2×2 WMMA 16×16×16 bf16 fragments with f32
// accumulators; K advances 32 at a time through shared memory. Each thread
// loads elements one by one, converting (and scaling) to bf16 on the way into
// shared memory, with the thread→element map chosen per operand so that
// consecutive threads read consecutive addresses (coalesced) whichever way the
// operand is stored. No double buffering, no cp.async: simple and clearly
// correct first; the frozen-weight products that dominate a step go through
// cuBLASLt when it can be loaded (cublaslt.cu) and this kernel is the fallback.
// Bounds: every load and store is checked, so any M, N, K (including 0) works.
// Operands are read element by element through their own ld (no vector loads),
// so the bf16 buffers lora_linear and linear_cross_entropy pack once per call
// (wide leading dimensions, column offsets into them) need no alignment here.
#include <mma.h>

#include <algorithm>

#include "cuda/gemm.h"

namespace instill {
namespace cuda {

namespace {

constexpr int BM = 64, BN = 64, BK = 32;
constexpr int LDA_S = BK + 8;   // 40 bf16: ldm multiple of 8, 32-byte aligned fragment rows
constexpr int LDB_S = BN + 8;   // 72 bf16
constexpr int LDC_S = BN + 4;   // 68 f32
constexpr int THREADS = 128;

struct KernelArgs {
  int64_t M, N, K0, K1;
  GemmOperand a0, a1, b0, b1;
  float alpha, beta;
  const float* bias;
  float* c;
  const float* cin;  // C as read when beta != 0: c, or GemmArgs::c_in
  int64_t ldc;
};

__device__ __forceinline__ float a_elem(const KernelArgs& g, int64_t m, int64_t k) {
  const GemmOperand& o = k < g.K0 ? g.a0 : g.a1;
  if (k >= g.K0) k -= g.K0;
  const int64_t i = o.trans ? k * o.ld + m : m * o.ld + k;
  return load_f32(o.p, o.e, i) * o.scale;
}

__device__ __forceinline__ float b_elem(const KernelArgs& g, int64_t k, int64_t n) {
  const GemmOperand& o = k < g.K0 ? g.b0 : g.b1;
  if (k >= g.K0) k -= g.K0;
  const int64_t i = o.trans ? n * o.ld + k : k * o.ld + n;
  return load_f32(o.p, o.e, i) * o.scale;
}

__global__ void __launch_bounds__(THREADS) gemm_wmma_kernel(const KernelArgs g) {
  pdl_enter();
  using namespace nvcuda;
  __shared__ __align__(32) __nv_bfloat16 As[BM][LDA_S];  // (m, k) of the current K tile
  __shared__ __align__(32) __nv_bfloat16 Bs[BK][LDB_S];  // (k, n)
  __shared__ __align__(32) float Cs[BM][LDC_S];

  const int tid = threadIdx.x, warp = tid >> 5;
  const int wm = warp >> 1, wn = warp & 1;  // warp quadrant (32×32)
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * BM, n0 = static_cast<int64_t>(blockIdx.x) * BN;
  const int64_t K = g.K0 + g.K1;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  for (int64_t k0 = 0; k0 < K; k0 += BK) {
    // Which operand is read in this K tile decides the coalesced map; a tile that
    // straddles the segment boundary uses segment 0's (correct either way).
    const bool a_kmajor = !(k0 < g.K0 ? g.a0 : g.a1).trans;  // k contiguous in memory
    const bool b_nmajor = !(k0 < g.K0 ? g.b0 : g.b1).trans;  // n contiguous in memory
    for (int idx = tid; idx < BM * BK; idx += THREADS) {
      const int r = a_kmajor ? idx / BK : idx % BM;
      const int kk = a_kmajor ? idx % BK : idx / BM;
      const int64_t m = m0 + r, k = k0 + kk;
      As[r][kk] = __float2bfloat16(m < g.M && k < K ? a_elem(g, m, k) : 0.f);
    }
    for (int idx = tid; idx < BK * BN; idx += THREADS) {
      const int kk = b_nmajor ? idx / BN : idx % BK;
      const int cc = b_nmajor ? idx % BN : idx / BK;
      const int64_t k = k0 + kk, n = n0 + cc;
      Bs[kk][cc] = __float2bfloat16(k < K && n < g.N ? b_elem(g, k, n) : 0.f);
    }
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < BK; ks += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &As[wm * 32 + i * 16][ks], LDA_S);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], &Bs[ks][wn * 32 + j * 16], LDB_S);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&Cs[wm * 32 + i * 16][wn * 32 + j * 16], acc[i][j], LDC_S, wmma::mem_row_major);
  __syncthreads();

  for (int idx = tid; idx < BM * BN; idx += THREADS) {
    const int r = idx / BN, cc = idx % BN;
    const int64_t m = m0 + r, n = n0 + cc;
    if (m >= g.M || n >= g.N) continue;
    float v = g.alpha * Cs[r][cc];
    if (g.bias) v += g.bias[n];
    if (g.beta != 0.f) v += g.beta * g.cin[m * g.ldc + n];
    g.c[m * g.ldc + n] = v;
  }
}

}  // namespace

bool gemm_cublaslt(const GemmArgs& g);  // cublaslt.cu: true when it ran the product

namespace {

// The exact fallback for all-f32 products (no cuBLASLt): f32 on the CUDA cores.
// A 64×64 output tile per block of 256 threads, each thread a 4×4 patch (rows
// ty + 16i, columns tx + 16j: neighbouring threads touch neighbouring columns),
// K through shared memory 16 at a time with the same bounds-checked element
// loads (both segments, scales, any orientation) as the WMMA kernel.
constexpr int FT = 64, FK = 16;

__global__ void __launch_bounds__(256) gemm_f32_kernel(const KernelArgs g) {
  pdl_enter();
  __shared__ float As[FK][FT + 1];  // As[k][m]
  __shared__ float Bs[FK][FT + 1];  // Bs[k][n]
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * FT, n0 = static_cast<int64_t>(blockIdx.x) * FT;
  const int64_t K = g.K0 + g.K1;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < K; k0 += FK) {
    for (int i = threadIdx.x; i < FT * FK; i += 256) {
      // A tile: consecutive threads walk m (reads along m are contiguous when A is
      // transposed, strided otherwise; the fallback favours simplicity).
      const int mm = i % FT, kk = i / FT;
      const int64_t m = m0 + mm, k = k0 + kk;
      As[kk][mm] = (m < g.M && k < K) ? a_elem(g, m, k) : 0.f;
      const int64_t n = n0 + mm;
      Bs[kk][mm] = (n < g.N && k < K) ? b_elem(g, k, n) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < FK; ++kk) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty + 16 * i;
    if (m >= g.M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx + 16 * j;
      if (n >= g.N) continue;
      float v = g.alpha * acc[i][j];
      if (g.bias) v += g.bias[n];
      g.c[m * g.ldc + n] = g.beta != 0.f ? v + g.beta * g.cin[m * g.ldc + n] : v;  // beta = 0 never reads C
    }
  }
}

// The bf16-C fallback's f32 scratch, at most (a block of rows at a time).
constexpr int64_t kC16ScratchBytes = 256ll << 20;

// Operand A's rows from m0 on: A (M, K) element (m, k) is p[m·ld + k], or p[k·ld + m] transposed.
GemmOperand rows_from(const GemmOperand& a, int64_t m0) {
  if (!a.p || m0 == 0) return a;
  const int64_t esz = a.e == Elem::F32 ? 4 : 2;
  GemmOperand o = a;
  o.p = static_cast<const char*>(a.p) + (a.trans ? m0 : m0 * a.ld) * esz;
  return o;
}

}  // namespace

void gemm(const GemmArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.M < 0 || g.N < 0 || g.K[0] < 0 || g.K[1] < 0) fail(ErrorCode::Internal, "gemm: negative size");
  const int64_t grid_y = (g.M + BM - 1) / BM, grid_x = (g.N + BN - 1) / BN;
  if (grid_y > 65535 || grid_x > 0x7fffffffll) {
    fail(ErrorCode::Unsupported, "CUDA gemm: ", g.M, " rows is more than this kernel's grid covers (", 65535ll * BM, ")");
  }
  if (g.c16) {
    if (g.c || g.c_in) fail(ErrorCode::Internal, "gemm: a bf16 C with an f32 C or C input");
    if (g.beta == 0.f && !g.bias && gemm_cublaslt(g)) return;  // bf16 D straight from the tensor cores
    // Otherwise the f32 result in scratch (the kernels below, beta and bias work on f32), rounded into C once; at
    // most kC16ScratchBytes of it, a block of rows at a time (the loss's bf16 logits without cuBLASLt: ~2 GB whole).
    const int64_t block = std::max<int64_t>(1, std::min<int64_t>(g.M, kC16ScratchBytes / (4 * g.N)));
    Tensor scratch = Tensor::empty({block, g.N}, DType::F32, Device::CUDA);
    for (int64_t m0 = 0; m0 < g.M; m0 += block) {
      const int64_t rows = std::min(block, g.M - m0);
      __nv_bfloat16* const c16 = g.c16 + m0 * g.ldc;
      if (g.beta != 0.f) pack_f32(c16, Elem::BF16, g.ldc, 1.f, rows, g.N, scratch.data_as<float>(), g.N);
      GemmArgs f = g;
      f.M = rows;
      for (int s = 0; s < 2; ++s) f.a[s] = rows_from(g.a[s], m0);
      f.c16 = nullptr;
      f.c = scratch.data_as<float>();
      f.ldc = g.N;
      gemm(f);
      pack_bf16(scratch.data(), Elem::F32, g.N, 1.f, rows, g.N, c16, g.ldc);
    }
    return;
  }
  if (gemm_cublaslt(g)) return;
  KernelArgs k{g.M, g.N, g.K[0], g.K[1], g.a[0], g.a[1], g.b[0], g.b[1], g.alpha, g.beta, g.bias, g.c,
               g.c_in ? g.c_in : g.c, g.ldc};
  if (k.K1 == 0) {
    k.a1 = k.a0;
    k.b1 = k.b0;
  }
  if (all_f32(g)) {  // exact: f32 operands are not rounded to bf16
    launch("gemm_f32_kernel", gemm_f32_kernel,
           dim3(static_cast<unsigned>((g.N + FT - 1) / FT), static_cast<unsigned>((g.M + FT - 1) / FT)), 256, 0,
           stream(), k);
    return;
  }
  launch("gemm_wmma_kernel", gemm_wmma_kernel, dim3(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y)),
         THREADS, 0, stream(), k);
}

}  // namespace cuda
}  // namespace instill
