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
#include "cuda/mma.cuh"
#include "ops/rmsnorm.h"

namespace instill {
namespace cuda {

namespace {
constexpr int kThreads = 256;

// kVec: C % 4 == 0 and x, w, y 16-byte aligned: float4 loads and stores (every row then starts aligned).
// Y: float, or __nv_bfloat16 (the same f32 math, each output rounded once: common.cuh's store1 / store4).
// ldy: y's row stride (C, or a packed buffer's: ops/rmsnorm.h's y_packed; kVec then needs ldy % 4 == 0).
// (rmsnorm_u_kernel below repeats this kernel's arithmetic expression for expression, kVec's, for the same bits:
// change both or neither. A shared inline function changed this kernel's sm_90a code: scripts/same-kernels.sh.)
template <bool kVec, typename Y = float>
__global__ void rmsnorm_forward_kernel(const float* x, const float* w, float eps, int64_t C, Y* y, int64_t ldy,
                                       float* rstd) {  // x (N, C), y (N, ldy); w (C); rstd (N)
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

constexpr int kURows = 16;     // rows a CTA: one mma.sync m16
constexpr int kUChunk = 256;   // columns of y staged at a time
constexpr int kUPad = 8;       // a staged row 528 bytes long: a fragment load's 8 rows fall in distinct banks
constexpr int kUMaxRows = 64;  // u_rows: one n-tile of 8 a warp, 8 warps

// x (N, C) f32, C % 16 == 0; y (N, ldy) bf16, s·u into columns C..C+mr; a (mr, lda) bf16 A's rows; mr % 8 == 0, <= 64.
// kThreads (256) threads. Rows past N: nothing written, zeros staged.
__global__ void __launch_bounds__(kThreads) rmsnorm_u_kernel(const float* x, const float* w, float eps, int64_t N,
                                                             int64_t C, __nv_bfloat16* y, int64_t ldy, float* rstd,
                                                             const __nv_bfloat16* a, int64_t lda, int mr, float s) {
  __shared__ float part[kURows][kThreads / 32];
  __shared__ float rs[kURows];
  __shared__ __align__(16) __nv_bfloat16 tile[kURows][kUChunk + kUPad];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kURows;
  // 1. rstd of the 16 rows: each thread's partial sums as the row kernel's thread of the same index makes them (the
  //    16 rows' loads in flight together), then block_sum's tree (a warp's butterfly, then the 8 warps' totals'), per row
  {
    float ss[kURows];
#pragma unroll
    for (int i = 0; i < kURows; ++i) ss[i] = 0.f;
    for (int64_t c = 4 * threadIdx.x; c < C; c += 4 * kThreads) {
#pragma unroll
      for (int i = 0; i < kURows; ++i)
        if (row0 + i < N) {
          const float4 v = *reinterpret_cast<const float4*>(x + (row0 + i) * C + c);
          ss[i] += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    }
#pragma unroll
    for (int i = 0; i < kURows; ++i) {
      const float v = warp_sum(ss[i]);
      if (lane == 0) part[i][warp] = v;
    }
    __syncthreads();
    for (int i = warp; i < kURows; i += kThreads / 32) {
      const float tot = warp_sum(lane < kThreads / 32 ? part[i][lane] : 0.f);
      if (lane == 0) {
        const float r = rsqrtf(tot / static_cast<float>(C) + eps);
        rs[i] = r;
        if (row0 + i < N) rstd[row0 + i] = r;
      }
    }
    __syncthreads();
  }
  // 2. by chunks of 256 columns: y written and staged (thread: row tid / 16, 4 columns of every 64), then warp j < mr / 8
  //    adds the chunk to u's columns 8j..8j+8 (A's fragments for the chunk loaded before the staging, to overlap it)
  const int sr = threadIdx.x >> 4, sc = (threadIdx.x & 15) * 4;
  const int64_t grow = row0 + sr;
  const float r = rs[sr];
  const bool mine = warp * 8 < mr;
  const int g = lane >> 2, t = lane & 3;
  const __nv_bfloat16* ar = a + static_cast<int64_t>(mine ? warp * 8 + g : 0) * lda + 2 * t;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int64_t c0 = 0; c0 < C; c0 += kUChunk) {
    const int width = static_cast<int>(min(static_cast<int64_t>(kUChunk), C - c0));  // a multiple of 16
    uint32_t b[kUChunk / 16][2];
#pragma unroll
    for (int k = 0; k < kUChunk / 16; ++k) {
      b[k][0] = b[k][1] = 0u;
      if (mine && 16 * k < width) {
        b[k][0] = *reinterpret_cast<const uint32_t*>(ar + c0 + 16 * k);
        b[k][1] = *reinterpret_cast<const uint32_t*>(ar + c0 + 16 * k + 8);
      }
    }
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
    if (mine) {
#pragma unroll
      for (int k = 0; k < kUChunk / 16; ++k) {
        if (16 * k < width) {
          const int kc = 16 * k + 2 * t;
          const uint32_t f[4] = {*reinterpret_cast<const uint32_t*>(&tile[g][kc]),
                                 *reinterpret_cast<const uint32_t*>(&tile[g + 8][kc]),
                                 *reinterpret_cast<const uint32_t*>(&tile[g][kc + 8]),
                                 *reinterpret_cast<const uint32_t*>(&tile[g + 8][kc + 8])};
          mma_bf16(acc, f, b[k][0], b[k][1]);
        }
      }
    }
    __syncthreads();  // (the tile is staged again)
  }
  if (mine) {  // acc: rows g and g + 8, columns 2t, 2t + 1 of the warp's 8
    const int64_t col = C + warp * 8 + 2 * t;
    if (row0 + g < N) *reinterpret_cast<uint32_t*>(y + (row0 + g) * ldy + col) = pack_bf16(s * acc[0], s * acc[1]);
    if (row0 + g + 8 < N) *reinterpret_cast<uint32_t*>(y + (row0 + g + 8) * ldy + col) = pack_bf16(s * acc[2], s * acc[3]);
  }
}

__global__ void rmsnorm_dw_kernel(const float* dy, const float* x, const float* rstd, int64_t N, int64_t C,
                                  int64_t rows_per_block, float* dw) {  // dw (C) +=
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
// column 0 (B (C, gr) in rows of ldb bf16); gr % 8 == 0, <= 64. kThreads (256) threads. dx may alias dy.
__global__ void __launch_bounds__(kThreads) rmsnorm_dx_g_kernel(const float* dy, const float* x, const float* w,
                                                                const float* rstd, int64_t N, int64_t C, bool accumulate,
                                                                float* dx, __nv_bfloat16* dxp, int64_t ldp,
                                                                const __nv_bfloat16* b, int64_t ldb, int gr, float s) {
  __shared__ float part[kURows][kThreads / 32];
  __shared__ float mg[kURows];
  __shared__ __align__(16) __nv_bfloat16 tile[kURows][kUChunk + kUPad];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kURows;
  // 1. mean(w·dy·x) of the 16 rows: the row kernel's per-thread sums and block_sum tree, as rmsnorm_u_kernel's rstd
  {
    float acc[kURows];
#pragma unroll
    for (int i = 0; i < kURows; ++i) acc[i] = 0.f;
    for (int64_t c = 4 * threadIdx.x; c < C; c += 4 * kThreads) {
      const float4 g = *reinterpret_cast<const float4*>(w + c);
#pragma unroll
      for (int i = 0; i < kURows; ++i)
        if (row0 + i < N) {
          const float4 d = *reinterpret_cast<const float4*>(dy + (row0 + i) * C + c),
                       v = *reinterpret_cast<const float4*>(x + (row0 + i) * C + c);
          acc[i] += g.x * d.x * v.x + g.y * d.y * v.y + g.z * d.z * v.z + g.w * d.w * v.w;
        }
    }
#pragma unroll
    for (int i = 0; i < kURows; ++i) {
      const float v = warp_sum(acc[i]);
      if (lane == 0) part[i][warp] = v;
    }
    __syncthreads();
    for (int i = warp; i < kURows; i += kThreads / 32) {
      const float tot = warp_sum(lane < kThreads / 32 ? part[i][lane] : 0.f);
      if (lane == 0) mg[i] = tot / static_cast<float>(C);
    }
    __syncthreads();
  }
  // 2. by chunks of 256 columns: dx written (f32 and bf16) and staged; warp j < gr / 8 adds the chunk to g's columns
  //    8j..8j+8 (B's fragments: two bf16 of rows k, k + 1 of column n, loaded before the staging)
  const int sr = threadIdx.x >> 4, sc = (threadIdx.x & 15) * 4;
  const int64_t grow = row0 + sr;
  const float r = grow < N ? rstd[grow] : 0.f, mean_gx = mg[sr];
  const float r3 = r * r * r;
  const bool mine = warp * 8 < gr;
  const int g8 = lane >> 2, t = lane & 3;
  const __nv_bfloat16* bc = b + (mine ? warp * 8 + g8 : 0);  // B's column n = 8·warp + lane / 4
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int64_t c0 = 0; c0 < C; c0 += kUChunk) {
    const int width = static_cast<int>(min(static_cast<int64_t>(kUChunk), C - c0));  // a multiple of 16
    uint32_t bf[kUChunk / 16][2];
#pragma unroll
    for (int k = 0; k < kUChunk / 16; ++k) {
      bf[k][0] = bf[k][1] = 0u;
      if (mine && 16 * k < width) {
        const int64_t k0 = c0 + 16 * k + 2 * t;  // rows k0, k0 + 1 (b0) and k0 + 8, k0 + 9 (b1)
        const auto two = [&](int64_t kr) {
          return static_cast<uint32_t>(__bfloat16_as_ushort(bc[kr * ldb])) |
                 (static_cast<uint32_t>(__bfloat16_as_ushort(bc[(kr + 1) * ldb])) << 16);
        };
        bf[k][0] = two(k0);
        bf[k][1] = two(k0 + 8);
      }
    }
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
    if (mine) {
#pragma unroll
      for (int k = 0; k < kUChunk / 16; ++k) {
        if (16 * k < width) {
          const int kc = 16 * k + 2 * t;
          const uint32_t f[4] = {*reinterpret_cast<const uint32_t*>(&tile[g8][kc]),
                                 *reinterpret_cast<const uint32_t*>(&tile[g8 + 8][kc]),
                                 *reinterpret_cast<const uint32_t*>(&tile[g8][kc + 8]),
                                 *reinterpret_cast<const uint32_t*>(&tile[g8 + 8][kc + 8])};
          mma_bf16(acc, f, bf[k][0], bf[k][1]);
        }
      }
    }
    __syncthreads();
  }
  if (mine) {
    const int64_t col = C + warp * 8 + 2 * t;
    if (row0 + g8 < N) *reinterpret_cast<uint32_t*>(dxp + (row0 + g8) * ldp + col) = pack_bf16(s * acc[0], s * acc[1]);
    if (row0 + g8 + 8 < N) *reinterpret_cast<uint32_t*>(dxp + (row0 + g8 + 8) * ldp + col) = pack_bf16(s * acc[2], s * acc[3]);
  }
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
      if (vec && C % 16 == 0 && p.u_rows % 8 == 0 && p.u_rows <= kUMaxRows && lda % 2 == 0 && aligned(a, 4)) {
        const unsigned ctas = static_cast<unsigned>((N + kURows - 1) / kURows);
        rmsnorm_u_kernel<<<ctas, kThreads, 0, stream()>>>(x, w, p.eps, N, C, y, ldy, rstd, a, lda,
                                                          static_cast<int>(p.u_rows), p.u_scale);
        check_launch("rmsnorm_u_kernel");
        return;
      }
    }
    if (vec) {
      rmsnorm_forward_kernel<true><<<grid, kThreads, 0, stream()>>>(x, w, p.eps, C, y, ldy, rstd);
    } else {
      rmsnorm_forward_kernel<false><<<grid, kThreads, 0, stream()>>>(x, w, p.eps, C, y, ldy, rstd);
    }
    check_launch("rmsnorm_forward_kernel");
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
  if (C % 4 == 0 && aligned16({x, w, y})) rmsnorm_forward_kernel<true><<<grid, kThreads, 0, stream()>>>(x, w, p.eps, C, y, C, rstd);
  else rmsnorm_forward_kernel<false><<<grid, kThreads, 0, stream()>>>(x, w, p.eps, C, y, C, rstd);
  check_launch("rmsnorm_forward_kernel");
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
    rmsnorm_dw_kernel<<<grid, kThreads, 0, stream()>>>(p.dy->data_as<float>(), p.x->data_as<float>(),
                                                       p.rstd->data_as<float>(), N, C, rows_per_block,
                                                       p.dw->data_as<float>());
    check_launch("rmsnorm_dw_kernel");
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
    if (vec && C % 16 == 0 && p.g_rows % 8 == 0 && p.g_rows <= kUMaxRows) {
      const unsigned ctas = static_cast<unsigned>((N + kURows - 1) / kURows);
      rmsnorm_dx_g_kernel<<<ctas, kThreads, 0, stream()>>>(dy, x, w, rstd, N, C, p.accumulate_dx, dx, dxp, ldp, b, ldb,
                                                           static_cast<int>(p.g_rows), p.g_scale);
      check_launch("rmsnorm_dx_g_kernel");
      return;
    }
  }
  if (vec) rmsnorm_dx_kernel<true><<<rows, kThreads, 0, stream()>>>(dy, x, w, rstd, C, p.accumulate_dx, dx, dxp, ldp);
  else rmsnorm_dx_kernel<false><<<rows, kThreads, 0, stream()>>>(dy, x, w, rstd, C, p.accumulate_dx, dx, dxp, ldp);
  check_launch("rmsnorm_dx_kernel");
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
