// rmsnorm on CUDA (ops/rmsnorm.h).
//
// Forward: one block (256 threads) per row (float4 loads where C % 4 == 0); Σx² in f32 per thread then a block
// reduction (the CPU sums in double; f32 over C ≤ 16k terms of one sign stays
// within ~1e-6 relative). y may alias x: the row is fully reduced before any
// thread writes, and each element is read and written by the same thread.
// Backward: dw first (one thread per column, rows split across blocks, f32
// atomics to combine the blocks' partial sums), then dx, one block per row;
// so dx may alias dy (dw has read dy before dx overwrites it).
// With u_a (ops/rmsnorm.h; INSTILL_CUDA_NEXT `norm_u`): also s·u = s · y·Aᵀ into the packed y's columns past C, where
// a lora_group's forward would make it with a product of its own (run 18: LoRA's u ~13 µs a call, ~10 of them latency,
// for ~3 µs of bytes). rmsnorm_u_kernel: a CTA of 16 rows, their rstd with the row kernel's exact per-thread sums
// and reduction tree (so y's bits are the row kernel's), then y in 256-column chunks, each written out and staged in
// shared memory as bf16, where warp j adds the chunk's share of u's columns 8j..8j+8 with mma.sync (A's rows read
// from global memory, L2-resident: 48 × 2048 bf16 for q/k/v). Where its conditions fail (u_rows > 64 or not a multiple
// of 8, C % 16, alignment), the row kernel and then gemm() (the group's own product).
// With g_b (INSTILL_CUDA_NEXT `norm_g`) the backward likewise: rmsnorm_dx_g_kernel, 16 rows a CTA, their dx with the
// row kernel's exact sums (dx's and dx_packed's bits the row kernel's), staged by chunks, and s·g = s · dx·B (o_proj's
// or down_proj's LoRA g) into dx_packed's columns past C; else the row kernel and gemm() (the linear's own product).
#include "cuda/common.cuh"
#include "cuda/gemm.h"
#include "cuda/narrow_mma.cuh"
#include "ops/rmsnorm.h"

namespace instill {
namespace cuda {

namespace {
constexpr int kThreads = 256;
static_assert(kThreads == kNarrowThreads, "rmsnorm_u_kernel and rmsnorm_dx_g_kernel sum a row as the row kernels' block does");

// kVec: C % 4 == 0 and x, w, y 16-byte aligned: float4 loads and stores (every row then starts aligned).
// Y: float, or __nv_bfloat16 (the same f32 math, each output rounded once: common.cuh's store1 / store4).
// ldy: y's row stride (C, or a packed buffer's: ops/rmsnorm.h's y_packed; kVec then needs ldy % 4 == 0).
// (rmsnorm_u_kernel below repeats this kernel's arithmetic expression for expression, kVec's, for the same bits:
// change both or neither. A shared inline function changed this kernel's sm_90a code: scripts/same-kernels.sh.)
template <bool kVec, typename Y = float>
__global__ void rmsnorm_forward_kernel(const float* x, const float* w, float eps, int64_t C, Y* y, int64_t ldy,
                                       float* rstd) {  // x (N, C), y (N, ldy); w (C); rstd (N)
  pdl_enter();
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const float* xr = x + row * C;
  Y* yr = y + row * ldy;
  float ss = 0.f;
  if (kVec) {
    for (int64_t c = 4 * threadIdx.x; c < C; c += 4 * blockDim.x) {
      const float4 v = *reinterpret_cast<const float4*>(xr + c);
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
  } else {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
  }
  ss = block_sum(ss, red);
  const float r = rsqrtf(ss / static_cast<float>(C) + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  if (kVec) {
    for (int64_t c = 4 * threadIdx.x; c < C; c += 4 * blockDim.x) {
      const float4 v = *reinterpret_cast<const float4*>(xr + c), g = *reinterpret_cast<const float4*>(w + c);
      store4(yr + c, make_float4(v.x * r * g.x, v.y * r * g.y, v.z * r * g.z, v.w * r * g.w));
    }
  } else {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) store1(yr + c, xr[c] * r * w[c]);
  }
}

// x (N, C) f32, C % 16 == 0; y (N, ldy) bf16, s·u into columns C..C+mr; a (mr, lda) bf16 A's rows; mr % 8 == 0, <= 64.
// narrow_mma.cuh's CTA. Rows past N: nothing written, zeros staged.
__global__ void __launch_bounds__(kNarrowThreads) rmsnorm_u_kernel(const float* x, const float* w, float eps, int64_t N,
                                                                   int64_t C, __nv_bfloat16* y, int64_t ldy, float* rstd,
                                                                   const __nv_bfloat16* a, int64_t lda, int mr, float s) {
  pdl_enter();
  __shared__ float part[kNarrowRows][kNarrowThreads / 32];
  __shared__ float tot[kNarrowRows];
  __shared__ __align__(16) Tile tile;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kNarrowRows;
  // 1. Σx² of the 16 rows: each thread's partial sums as the row kernel's thread of the same index makes them (the 16
  //    rows' loads in flight together), then its block_sum tree (rows_block_sum): rstd in the row kernel's bits
  {
    float ss[kNarrowRows];
#pragma unroll
    for (int i = 0; i < kNarrowRows; ++i) ss[i] = 0.f;
    for (int64_t c = 4 * threadIdx.x; c < C; c += 4 * kNarrowThreads) {
#pragma unroll
      for (int i = 0; i < kNarrowRows; ++i)
        if (row0 + i < N) {
          const float4 v = *reinterpret_cast<const float4*>(x + (row0 + i) * C + c);
          ss[i] += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    }
    rows_block_sum(ss, part, tot);
  }
  // 2. by chunks: y written and staged (thread: row tid / 16, 4 columns of every 64), then warp j < mr / 8 adds the
  //    chunk to u's columns 8j..8j+8
  const int sr = threadIdx.x >> 4, sc = (threadIdx.x & 15) * 4;
  const int64_t grow = row0 + sr;
  const float r = rsqrtf(tot[sr] / static_cast<float>(C) + eps);
  if ((threadIdx.x & 15) == 0 && grow < N) rstd[grow] = r;
  const bool mine = warp * 8 < mr;
  const __nv_bfloat16* ar = a + static_cast<int64_t>(mine ? warp * 8 + (lane >> 2) : 0) * lda + 2 * (lane & 3);
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int64_t c0 = 0; c0 < C; c0 += kNarrowChunk) {
    const int width = static_cast<int>(min(static_cast<int64_t>(kNarrowChunk), C - c0));  // a multiple of 16
    BFrags bf;
    b_frags_rows(bf, ar, c0, width, mine);
    for (int j = sc; j < width; j += 64) {
      float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
      if (grow < N) {
        const float4 v = *reinterpret_cast<const float4*>(x + grow * C + c0 + j), g = *reinterpret_cast<const float4*>(w + c0 + j);
        o = make_float4(v.x * r * g.x, v.y * r * g.y, v.z * r * g.z, v.w * r * g.w);
        store4(y + grow * ldy + c0 + j, o);
      }
      store4(&tile[sr][j], o);
    }
    __syncthreads();
    if (mine) mma_chunk(acc, tile, bf, width, lane);
    __syncthreads();  // (the tile is staged again)
  }
  if (mine) store_narrow(y, ldy, row0, N, C, s, acc, warp, lane);
}

__global__ void rmsnorm_dw_kernel(const float* dy, const float* x, const float* rstd, int64_t N, int64_t C,
                                  int64_t rows_per_block, float* dw) {  // dw (C) +=
  pdl_enter();
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const int64_t r0 = blockIdx.y * rows_per_block;
  const int64_t r1 = min(N, r0 + rows_per_block);
  float acc = 0.f;
  for (int64_t r = r0; r < r1; ++r) acc += dy[r * C + c] * x[r * C + c] * rstd[r];
  atomicAdd(dw + c, acc);
}

// kVec: C % 4 == 0 and dy, x, w, dx 16-byte aligned.
// dxp (or null): dx's final values also rounded to bf16 into row·ldp of it (ops/rmsnorm.h, dx_packed); kVec
// there needs ldp % 4 == 0 and dxp 8-byte aligned, checked with the rest on the host.
// (rmsnorm_dx_g_kernel below repeats kVec's arithmetic expression for expression, for the same bits: change both.)
template <bool kVec>
__global__ void rmsnorm_dx_kernel(const float* dy, const float* x, const float* w, const float* rstd, int64_t C,
                                  bool accumulate, float* dx, __nv_bfloat16* dxp, int64_t ldp) {
  pdl_enter();
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const float* dyr = dy + row * C;
  const float* xr = x + row * C;
  float* dxr = dx + row * C;
  float s = 0.f;
  if (kVec) {
    for (int64_t c = 4 * threadIdx.x; c < C; c += 4 * blockDim.x) {
      const float4 g = *reinterpret_cast<const float4*>(w + c), d = *reinterpret_cast<const float4*>(dyr + c),
                   v = *reinterpret_cast<const float4*>(xr + c);
      s += g.x * d.x * v.x + g.y * d.y * v.y + g.z * d.z * v.z + g.w * d.w * v.w;
    }
  } else {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += w[c] * dyr[c] * xr[c];
  }
  s = block_sum(s, red);
  const float r = rstd[row];
  const float mean_gx = s / static_cast<float>(C);
  const float r3 = r * r * r;
  if (kVec) {
    for (int64_t c = 4 * threadIdx.x; c < C; c += 4 * blockDim.x) {
      const float4 g = *reinterpret_cast<const float4*>(w + c), d = *reinterpret_cast<const float4*>(dyr + c),
                   v = *reinterpret_cast<const float4*>(xr + c);
      float4 o = make_float4(r * g.x * d.x - v.x * r3 * mean_gx, r * g.y * d.y - v.y * r3 * mean_gx,
                             r * g.z * d.z - v.z * r3 * mean_gx, r * g.w * d.w - v.w * r3 * mean_gx);
      if (accumulate) {
        const float4 a = *reinterpret_cast<const float4*>(dxr + c);
        o = make_float4(a.x + o.x, a.y + o.y, a.z + o.z, a.w + o.w);
      }
      *reinterpret_cast<float4*>(dxr + c) = o;
      if (dxp) store4(dxp + row * ldp + c, o);
    }
  } else {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float v = r * w[c] * dyr[c] - xr[c] * r3 * mean_gx;
      const float o = accumulate ? dxr[c] + v : v;
      dxr[c] = o;
      if (dxp) dxp[row * ldp + c] = __float2bfloat16_rn(o);
    }
  }
}
// dy, x, dx (N, C) f32, C % 16 == 0; dxp (N, ldp) bf16: dx rounded into columns 0..C, s·g into C..C+gr; b: B's
// column 0 (B (C, gr) in rows of ldb bf16); gr % 8 == 0, <= 64. narrow_mma.cuh's CTA. dx may alias dy.
__global__ void __launch_bounds__(kNarrowThreads) rmsnorm_dx_g_kernel(const float* dy, const float* x, const float* w,
                                                                      const float* rstd, int64_t N, int64_t C,
                                                                      bool accumulate, float* dx, __nv_bfloat16* dxp,
                                                                      int64_t ldp, const __nv_bfloat16* b, int64_t ldb,
                                                                      int gr, float s) {
  pdl_enter();
  __shared__ float part[kNarrowRows][kNarrowThreads / 32];
  __shared__ float tot[kNarrowRows];
  __shared__ __align__(16) Tile tile;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kNarrowRows;
  // 1. Σ w·dy·x of the 16 rows: the row kernel's per-thread sums and block_sum tree, as rmsnorm_u_kernel's Σx²
  {
    float acc[kNarrowRows];
#pragma unroll
    for (int i = 0; i < kNarrowRows; ++i) acc[i] = 0.f;
    for (int64_t c = 4 * threadIdx.x; c < C; c += 4 * kNarrowThreads) {
      const float4 g = *reinterpret_cast<const float4*>(w + c);
#pragma unroll
      for (int i = 0; i < kNarrowRows; ++i)
        if (row0 + i < N) {
          const float4 d = *reinterpret_cast<const float4*>(dy + (row0 + i) * C + c),
                       v = *reinterpret_cast<const float4*>(x + (row0 + i) * C + c);
          acc[i] += g.x * d.x * v.x + g.y * d.y * v.y + g.z * d.z * v.z + g.w * d.w * v.w;
        }
    }
    rows_block_sum(acc, part, tot);
  }
  // 2. by chunks: dx written (f32 and bf16) and staged; warp j < gr / 8 adds the chunk to g's columns 8j..8j+8
  const int sr = threadIdx.x >> 4, sc = (threadIdx.x & 15) * 4;
  const int64_t grow = row0 + sr;
  const float r = grow < N ? rstd[grow] : 0.f, mean_gx = tot[sr] / static_cast<float>(C);
  const float r3 = r * r * r;
  const bool mine = warp * 8 < gr;
  const __nv_bfloat16* bc = b + (mine ? warp * 8 + (lane >> 2) : 0);  // B's column n = 8·warp + lane / 4
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int64_t c0 = 0; c0 < C; c0 += kNarrowChunk) {
    const int width = static_cast<int>(min(static_cast<int64_t>(kNarrowChunk), C - c0));  // a multiple of 16
    BFrags bf;
    b_frags_cols(bf, bc, ldb, c0, width, mine, lane & 3);
    for (int j = sc; j < width; j += 64) {
      float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
      if (grow < N) {
        const int64_t c = c0 + j;
        const float4 g = *reinterpret_cast<const float4*>(w + c), d = *reinterpret_cast<const float4*>(dy + grow * C + c),
                     v = *reinterpret_cast<const float4*>(x + grow * C + c);
        o = make_float4(r * g.x * d.x - v.x * r3 * mean_gx, r * g.y * d.y - v.y * r3 * mean_gx,
                        r * g.z * d.z - v.z * r3 * mean_gx, r * g.w * d.w - v.w * r3 * mean_gx);
        if (accumulate) {
          const float4 a = *reinterpret_cast<const float4*>(dx + grow * C + c);
          o = make_float4(a.x + o.x, a.y + o.y, a.z + o.z, a.w + o.w);
        }
        *reinterpret_cast<float4*>(dx + grow * C + c) = o;
        store4(dxp + grow * ldp + c, o);
      }
      store4(&tile[sr][j], o);
    }
    __syncthreads();
    if (mine) mma_chunk(acc, tile, bf, width, lane);
    __syncthreads();
  }
  if (mine) store_narrow(dxp, ldp, row0, N, C, s, acc, warp, lane);
}
}  // namespace

void rmsnorm_forward(const RmsnormForwardArgs& p) {
  const int64_t N = p.x->dim(0), C = p.x->dim(1);
  if (N == 0) return;
  if (N > 0x7fffffffll) fail(ErrorCode::Unsupported, "rmsnorm on CUDA: too many rows (", N, ")");
  const float *x = p.x->data_as<float>(), *w = p.w->data_as<float>();
  float* rstd = p.rstd->data_as<float>();
  const unsigned grid = static_cast<unsigned>(N);
  const Tensor& yt = p.y_packed ? *p.y_packed : *p.y;
  const int64_t ldy = p.y_packed ? p.y_packed->dim(1) : C;  // the packed buffer's row stride (ops/rmsnorm.h)
  if (yt.dtype() == DType::BF16) {  // the model's norm outputs with bf16 activations (ops/rmsnorm.h)
    __nv_bfloat16* y = yt.data_as<__nv_bfloat16>();
    const bool vec = C % 4 == 0 && ldy % 4 == 0 && aligned16({x, w, y});
    if (p.u_a) {  // s·u besides (ops/rmsnorm.h's u_a)
      const int64_t lda = p.u_a->dim(1);
      const __nv_bfloat16* a = bf16_ptr(*p.u_a) + p.u_row0 * lda;
      if (vec && C % 16 == 0 && p.u_rows % 8 == 0 && p.u_rows <= kNarrowMax && lda % 2 == 0 && aligned(a, 4)) {
        const unsigned ctas = static_cast<unsigned>((N + kNarrowRows - 1) / kNarrowRows);
        launch("rmsnorm_u_kernel", rmsnorm_u_kernel, ctas, kNarrowThreads, 0, stream(), x, w, p.eps, N, C, y, ldy, rstd,
               a, lda, static_cast<int>(p.u_rows), p.u_scale);
        return;
      }
    }
    if (vec) {
      launch("rmsnorm_forward_kernel", rmsnorm_forward_kernel<true, __nv_bfloat16>, grid, kThreads, 0, stream(), x, w,
             p.eps, C, y, ldy, rstd);
    } else {
      launch("rmsnorm_forward_kernel", rmsnorm_forward_kernel<false, __nv_bfloat16>, grid, kThreads, 0, stream(), x, w,
             p.eps, C, y, ldy, rstd);
    }
    if (p.u_a) {  // the product the group's forward would make (lora_group.cu): s·u (N, u_rows) = s · y·Aᵀ into y's columns C..
      const OpPart part("u = x A^T (the norm's u_a)", Device::CUDA);
      GemmArgs g;
      g.M = N; g.N = p.u_rows; g.K[0] = C;
      g.a[0] = bf16_operand(y, ldy, false);
      g.b[0] = bf16_operand(bf16_ptr(*p.u_a) + p.u_row0 * p.u_a->dim(1), p.u_a->dim(1), true);
      g.alpha = p.u_scale;
      g.c16 = y + C; g.ldc = ldy;
      gemm(g);
    }
    return;
  }
  float* y = yt.data_as<float>();
  if (C % 4 == 0 && aligned16({x, w, y})) launch("rmsnorm_forward_kernel", rmsnorm_forward_kernel<true>, grid, kThreads,
                                                 0, stream(), x, w, p.eps, C, y, C, rstd);
  else launch("rmsnorm_forward_kernel", rmsnorm_forward_kernel<false>, grid, kThreads, 0, stream(), x, w, p.eps, C, y,
              C, rstd);
}

void rmsnorm_backward(const RmsnormBackwardArgs& p) {
  const int64_t N = p.x->dim(0), C = p.x->dim(1);
  if (N == 0) return;
  if (N > 0x7fffffffll) fail(ErrorCode::Unsupported, "rmsnorm on CUDA: too many rows (", N, ")");
  if (p.dw && C > 0) {
    const int64_t rows_per_block = 64;
    const int64_t gy = (N + rows_per_block - 1) / rows_per_block;
    if (gy > 65535) fail(ErrorCode::Unsupported, "rmsnorm backward on CUDA: too many rows (", N, ")");
    dim3 grid(static_cast<unsigned>((C + kThreads - 1) / kThreads), static_cast<unsigned>(gy));
    launch("rmsnorm_dw_kernel", rmsnorm_dw_kernel, grid, kThreads, 0, stream(), p.dy->data_as<float>(),
           p.x->data_as<float>(), p.rstd->data_as<float>(), N, C, rows_per_block, p.dw->data_as<float>());
  }
  const float *dy = p.dy->data_as<float>(), *x = p.x->data_as<float>(), *w = p.w->data_as<float>();
  const float* rstd = p.rstd->data_as<float>();
  float* dx = p.dx->data_as<float>();
  __nv_bfloat16* dxp = p.dx_packed ? p.dx_packed->data_as<__nv_bfloat16>() : nullptr;
  const int64_t ldp = p.dx_packed ? p.dx_packed->dim(1) : 0;
  const unsigned rows = static_cast<unsigned>(N);
  const bool vec = C % 4 == 0 && aligned16({dy, x, w, dx}) && (!dxp || (ldp % 4 == 0 && aligned(dxp, 8)));
  if (p.g_b) {  // s·g besides (ops/rmsnorm.h's g_b)
    const int64_t ldb = p.g_b->dim(1);
    const __nv_bfloat16* b = bf16_ptr(*p.g_b) + p.g_col0;
    if (vec && C % 16 == 0 && p.g_rows % 8 == 0 && p.g_rows <= kNarrowMax) {
      const unsigned ctas = static_cast<unsigned>((N + kNarrowRows - 1) / kNarrowRows);
      launch("rmsnorm_dx_g_kernel", rmsnorm_dx_g_kernel, ctas, kNarrowThreads, 0, stream(), dy, x, w, rstd, N, C,
             p.accumulate_dx, dx, dxp, ldp, b, ldb, static_cast<int>(p.g_rows), p.g_scale);
      return;
    }
  }
  if (vec) launch("rmsnorm_dx_kernel", rmsnorm_dx_kernel<true>, rows, kThreads, 0, stream(), dy, x, w, rstd, C,
                  p.accumulate_dx, dx, dxp, ldp);
  else launch("rmsnorm_dx_kernel", rmsnorm_dx_kernel<false>, rows, kThreads, 0, stream(), dy, x, w, rstd, C,
              p.accumulate_dx, dx, dxp, ldp);
  if (p.g_b) {  // the product the linear's backward would make (lora_linear.cu): s·g (N, g_rows) = s · dx·B into dxp's columns C..
    const OpPart part("g = dy B (the norm's g_b)", Device::CUDA);
    GemmArgs g;
    g.M = N; g.N = p.g_rows; g.K[0] = C;
    g.a[0] = bf16_operand(dxp, ldp, false);
    g.b[0] = bf16_operand(bf16_ptr(*p.g_b) + p.g_col0, p.g_b->dim(1), false);  // B stored (C, g_rows) = (K, N)
    g.alpha = p.g_scale;
    g.c16 = dxp + C; g.ldc = ldp;
    gemm(g);
  }
}

}  // namespace cuda
}  // namespace instill
