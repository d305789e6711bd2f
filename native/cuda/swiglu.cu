// swiglu on CUDA (ops/swiglu.h): elementwise, f32, σ(g) = 1 / (1 + exp(−g)) with
// the accurate expf (no fast-math), so it matches the CPU to f32 rounding. bf16 tensors:
// the same math in f32 on the widened inputs, each output rounded once (to nearest even,
// as the CPU rounds), 8 elements a thread (16-byte loads and stores) where aligned.
// With g_b (ops/swiglu.h; INSTILL_CUDA_NEXT `swiglu_g`) the packed backward also makes the gate/up group's LoRA s·g:
// swiglu_backward_g_kernel, 16 rows a CTA, dgate and dup as the packed kernel makes them (swiglu_grad8: the same bits)
// written out and staged by 256-column chunks, where warp j adds its 8 columns of g (gate's block or up's) with
// mma.sync, B's fragments from the kept matrix: the group's g product (run 18: the MLP group's reads 2 × N × F bf16
// again, ~22 µs at memory speed for the 1B model) folded into the pass that wrote its input. Where its shapes do not
// fit, the packed kernel and then gemm(), the group's product split at its diagonal blocks. With u_a (`swiglu_u`) the
// packed forward likewise makes down_proj's s·u = s · h·Aᵀ (swiglu_forward_u_kernel, h by swiglu8), A's rows from
// below down_proj's W.
#include <cuda_bf16.h>

#include "cuda/common.cuh"
#include "cuda/gemm.h"
#include "cuda/narrow_mma.cuh"
#include "ops/swiglu.h"

namespace instill {
namespace cuda {

namespace {
__device__ __forceinline__ float swiglu(float g, float u) { return g * (1.f / (1.f + expf(-g))) * u; }

__device__ __forceinline__ void swiglu_grad(float d, float g, float u, float& dg, float& du) {
  const float sig = 1.f / (1.f + expf(-g));
  dg = d * u * sig * (1.f + g * (1.f - sig));
  du = d * g * sig;
}

// Elements 4 at a time (16-byte loads and stores) where every pointer is 16-byte
// aligned; the first n4 = n − n % 4 elements, the scalar kernel does the rest.
__global__ void swiglu_forward_kernel4(const float4* gate, const float4* up, float4* out, int64_t n4) {
  pdl_enter();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n4;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4 g = gate[i], u = up[i];
    out[i] = make_float4(swiglu(g.x, u.x), swiglu(g.y, u.y), swiglu(g.z, u.z), swiglu(g.w, u.w));
  }
}

__global__ void swiglu_forward_kernel(const float* gate, const float* up, float* out, int64_t begin, int64_t n) {
  pdl_enter();
  for (int64_t i = begin + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = swiglu(gate[i], up[i]);
}

__global__ void swiglu_backward_kernel4(const float4* dout, const float4* gate, const float4* up, float4* dgate,
                                        float4* dup, int64_t n4) {
  pdl_enter();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n4;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4 d = dout[i], g = gate[i], u = up[i];
    float4 dg, du;
    swiglu_grad(d.x, g.x, u.x, dg.x, du.x);
    swiglu_grad(d.y, g.y, u.y, dg.y, du.y);
    swiglu_grad(d.z, g.z, u.z, dg.z, du.z);
    swiglu_grad(d.w, g.w, u.w, dg.w, du.w);
    dgate[i] = dg;
    dup[i] = du;
  }
}

__global__ void swiglu_backward_kernel(const float* dout, const float* gate, const float* up, float* dgate, float* dup,
                                       int64_t begin, int64_t n) {
  pdl_enter();
  for (int64_t i = begin + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    swiglu_grad(dout[i], gate[i], up[i], dgate[i], dup[i]);
}

// ---- bf16: 8 elements (one uint4 of four bf16 pairs) a thread, a scalar kernel for the rest
using bf16 = __nv_bfloat16;
using bf162 = __nv_bfloat162;

// Eight bf16 elements (one uint4) at once, each result rounded once: the 8-wide kernels' bodies. The callers load
// each uint4 whole first (by value: a reference into global memory let nvcc split the 16-byte loads).
__device__ __forceinline__ uint4 swiglu8(const uint4 gv, const uint4 uv) {
  uint4 ov;
  const bf162* g2 = reinterpret_cast<const bf162*>(&gv);
  const bf162* u2 = reinterpret_cast<const bf162*>(&uv);
  bf162* o2 = reinterpret_cast<bf162*>(&ov);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 g = __bfloat1622float2(g2[j]), u = __bfloat1622float2(u2[j]);
    o2[j] = __floats2bfloat162_rn(swiglu(g.x, u.x), swiglu(g.y, u.y));
  }
  return ov;
}

__device__ __forceinline__ void swiglu_grad8(const uint4 dv, const uint4 gv, const uint4 uv, uint4& dgv, uint4& duv) {
  const bf162* d2 = reinterpret_cast<const bf162*>(&dv);
  const bf162* g2 = reinterpret_cast<const bf162*>(&gv);
  const bf162* u2 = reinterpret_cast<const bf162*>(&uv);
  bf162* dg2 = reinterpret_cast<bf162*>(&dgv);
  bf162* du2 = reinterpret_cast<bf162*>(&duv);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 d = __bfloat1622float2(d2[j]), g = __bfloat1622float2(g2[j]), u = __bfloat1622float2(u2[j]);
    float2 dg, du;
    swiglu_grad(d.x, g.x, u.x, dg.x, du.x);
    swiglu_grad(d.y, g.y, u.y, dg.y, du.y);
    dg2[j] = __floats2bfloat162_rn(dg.x, dg.y);
    du2[j] = __floats2bfloat162_rn(du.x, du.y);
  }
}

__global__ void swiglu_forward_bf16_kernel8(const uint4* gate, const uint4* up, uint4* out, int64_t n8) {
  pdl_enter();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n8;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint4 gv = gate[i], uv = up[i];
    out[i] = swiglu8(gv, uv);
  }
}

__global__ void swiglu_forward_bf16_kernel(const bf16* gate, const bf16* up, bf16* out, int64_t begin, int64_t n) {
  pdl_enter();
  for (int64_t i = begin + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16_rn(swiglu(__bfloat162float(gate[i]), __bfloat162float(up[i])));
}

__global__ void swiglu_backward_bf16_kernel8(const uint4* dout, const uint4* gate, const uint4* up, uint4* dgate,
                                             uint4* dup, int64_t n8) {
  pdl_enter();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n8;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint4 dv = dout[i], gv = gate[i], uv = up[i];
    uint4 dgv, duv;
    swiglu_grad8(dv, gv, uv, dgv, duv);
    dgate[i] = dgv;
    dup[i] = duv;
  }
}

__global__ void swiglu_backward_bf16_kernel(const bf16* dout, const bf16* gate, const bf16* up, bf16* dgate, bf16* dup,
                                            int64_t begin, int64_t n) {
  pdl_enter();
  for (int64_t i = begin + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float dg, du;
    swiglu_grad(__bfloat162float(dout[i]), __bfloat162float(gate[i]), __bfloat162float(up[i]), dg, du);
    dgate[i] = __float2bfloat16_rn(dg);
    dup[i] = __float2bfloat16_rn(du);
  }
}

// dgu (ops/swiglu.h): dgate and dup rounded into columns 0..F and F..2F of a bf16 (N, ld) buffer, from dout, gate,
// up of type T (f32 or bf16). kVec: T bf16, F and ld multiples of 8, every base 16-byte aligned: 8 elements a
// thread (a group of 8 never crosses a row), one division a group.
template <typename T, bool kVec>
__global__ void swiglu_backward_packed_kernel(const T* dout, const T* gate, const T* up, bf16* dgu, int64_t f,
                                              int64_t ld, int64_t n) {
  pdl_enter();
  const int64_t per = kVec ? 8 : 1;
  for (int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * per; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x * per) {
    const int64_t r = i / f, c = i - r * f;
    bf16* dg = dgu + r * ld + c;
    bf16* du = dg + f;
    if constexpr (kVec) {
      const uint4 dv = *reinterpret_cast<const uint4*>(dout + i), gv = *reinterpret_cast<const uint4*>(gate + i),
                  uv = *reinterpret_cast<const uint4*>(up + i);
      uint4 dgv, duv;
      swiglu_grad8(dv, gv, uv, dgv, duv);
      *reinterpret_cast<uint4*>(dg) = dgv;
      *reinterpret_cast<uint4*>(du) = duv;
    } else {
      float a, b;
      swiglu_grad(load1(dout + i), load1(gate + i), load1(up + i), a, b);
      *dg = __float2bfloat16_rn(a);
      *du = __float2bfloat16_rn(b);
    }
  }
}

// A thread's part of a chunk's staging in the SwiGLU kernels: row tid / 16, 8 columns at sc and 8 at sc + 128 (two
// uint4 of bf16 a tensor read).
constexpr int kStageGroups = 2;

// The next chunk's loads of the SwiGLU kernels (two or three bf16 (N, f) tensors), issued during a chunk's work so that
// two chunks' bytes are in flight (one CTA an SM: 8 warps to cover the memory's latency). Zeros past N and f.
template <int kTensors>
struct ChunkLoads {
  uint4 v[kTensors][kStageGroups];
  __device__ __forceinline__ void load(const bf16* const (&src)[kTensors], int64_t row, int64_t N, int64_t f, int64_t c,
                                       int sc) {
#pragma unroll
    for (int q = 0; q < kStageGroups; ++q) {
      const int64_t col = c + sc + 128 * q;
      const bool in = row < N && col < min(c + kNarrowChunk, f);
#pragma unroll
      for (int m = 0; m < kTensors; ++m)
        v[m][q] = in ? *reinterpret_cast<const uint4*>(src[m] + row * f + col) : make_uint4(0u, 0u, 0u, 0u);
    }
  }
};

// dout, gate, up (N, f) bf16, f % 16 == 0; dgu (N, ld) bf16: dgate, dup into columns 0..f, f..2f, s·g into 2f..2f+2r;
// b: B's column 0 of the kept matrix (rows 0..2f, ld ldb: gate's block columns 0..r of rows 0..f, up's r..2r of rows
// f..2f); r % 8 == 0, 2r <= 64. narrow_mma.cuh's CTA, one tile for dgate and one for dup, each warp multiplying its
// own block's. Rows past N: nothing written, zeros staged.
__global__ void __launch_bounds__(kNarrowThreads) swiglu_backward_g_kernel(const bf16* dout, const bf16* gate,
                                                                           const bf16* up, bf16* dgu, int64_t f,
                                                                           int64_t ld, int64_t N, const bf16* b,
                                                                           int64_t ldb, int r, float s) {
  pdl_enter();
  __shared__ __align__(16) Tile tile[2];  // dgate's chunk, dup's
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kNarrowRows;
  const int sr = threadIdx.x >> 4, sc = (threadIdx.x & 15) * 8;
  const int64_t grow = row0 + sr;
  const bool mine = warp * 8 < 2 * r;
  const int h = warp * 8 < r ? 0 : 1;  // the warp's block: gate's (0) or up's (1)
  const bf16* bc = b + h * f * ldb + (mine ? warp * 8 + (lane >> 2) : 0);  // B's column 8·warp + lane / 4, its rows
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  const bf16* const src[3] = {dout, gate, up};
  ChunkLoads<3> next;
  next.load(src, grow, N, f, 0, sc);
  for (int64_t c0 = 0; c0 < f; c0 += kNarrowChunk) {
    const int width = static_cast<int>(min(static_cast<int64_t>(kNarrowChunk), f - c0));  // a multiple of 16
    BFrags bf;
    b_frags_cols(bf, bc, ldb, c0, width, mine, lane & 3);
    const ChunkLoads<3> cur = next;
    next.load(src, grow, N, f, c0 + kNarrowChunk, sc);
#pragma unroll
    for (int q = 0; q < kStageGroups; ++q) {
      const int j = sc + 128 * q;
      if (j >= width) continue;
      uint4 dgv = make_uint4(0u, 0u, 0u, 0u), duv = dgv;
      if (grow < N) {
        swiglu_grad8(cur.v[0][q], cur.v[1][q], cur.v[2][q], dgv, duv);
        *reinterpret_cast<uint4*>(dgu + grow * ld + c0 + j) = dgv;
        *reinterpret_cast<uint4*>(dgu + grow * ld + f + c0 + j) = duv;
      }
      *reinterpret_cast<uint4*>(&tile[0][sr][j]) = dgv;
      *reinterpret_cast<uint4*>(&tile[1][sr][j]) = duv;
    }
    __syncthreads();
    if (mine) mma_chunk(acc, tile[h], bf, width, lane);
    __syncthreads();
  }
  if (mine) store_narrow(dgu, ld, row0, N, 2 * f, s, acc, warp, lane);
}

void swiglu_backward_packed(const SwigluBackwardArgs& p, int64_t n) {
  const int64_t f = p.gate->dim(1), ld = p.dgu->dim(1);
  bf16* out = p.dgu->data_as<bf16>();
  if (p.g_b && p.gate->dtype() == DType::BF16) {  // s·g besides (ops/swiglu.h's g_b)
    const bf16 *d = p.dout->data_as<bf16>(), *g = p.gate->data_as<bf16>(), *u = p.up->data_as<bf16>();
    const int64_t r = p.g_rank, rows = p.gate->dim(0);
    if (f % 16 == 0 && ld % 8 == 0 && aligned16({d, g, u, out}) && r % 8 == 0 && 2 * r <= kNarrowMax) {
      const unsigned ctas = static_cast<unsigned>((rows + kNarrowRows - 1) / kNarrowRows);
      launch("swiglu_backward_g_kernel", swiglu_backward_g_kernel, ctas, kNarrowThreads, 0, stream(), d, g, u, out, f,
             ld, rows, bf16_ptr(*p.g_b) + p.g_col0, p.g_b->dim(1), static_cast<int>(r), p.g_scale);
      return;
    }
  }
  if (p.gate->dtype() == DType::BF16) {
    const bf16 *d = p.dout->data_as<bf16>(), *g = p.gate->data_as<bf16>(), *u = p.up->data_as<bf16>();
    if (f % 8 == 0 && ld % 8 == 0 && aligned16({d, g, u, out})) {
      launch("swiglu_backward_packed_kernel", swiglu_backward_packed_kernel<bf16, true>, grid_1d(n / 8, 256), 256, 0,
             stream(), d, g, u, out, f, ld, n);
    } else {
      launch("swiglu_backward_packed_kernel", swiglu_backward_packed_kernel<bf16, false>, grid_1d(n, 256), 256, 0,
             stream(), d, g, u, out, f, ld, n);
    }
  } else {
    launch("swiglu_backward_packed_kernel", swiglu_backward_packed_kernel<float, false>, grid_1d(n, 256), 256, 0,
           stream(), p.dout->data_as<float>(), p.gate->data_as<float>(), p.up->data_as<float>(), out, f, ld, n);
  }
  if (p.g_b) {  // the group's product (lora_group.cu), a diagonal block at a time: s·g_h = s · dy_h·B_h into dgu's columns 2F + h·R..
    const OpPart part("g = dy [B] (swiglu's g_b)", Device::CUDA);
    const int64_t r = p.g_rank, ldb = p.g_b->dim(1);
    for (int h = 0; h < 2; ++h) {
      GemmArgs g;
      g.M = p.gate->dim(0); g.N = r; g.K[0] = f;
      g.a[0] = bf16_operand(out + h * f, ld, false);
      g.b[0] = bf16_operand(bf16_ptr(*p.g_b) + h * f * ldb + p.g_col0 + h * r, ldb, false);  // (F, R) = (K, N)
      g.alpha = p.g_scale;
      g.c16 = out + 2 * f + h * r; g.ldc = ld;
      gemm(g);
    }
  }
}

// out_packed (ops/swiglu.h): out rounded into the first F columns of a bf16 (N, ld) buffer, from gate, up of type T.
// kVec as the packed backward's.
template <typename T, bool kVec>
__global__ void swiglu_forward_packed_kernel(const T* gate, const T* up, bf16* outp, int64_t f, int64_t ld, int64_t n) {
  pdl_enter();
  const int64_t per = kVec ? 8 : 1;
  for (int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * per; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x * per) {
    const int64_t r = i / f, c = i - r * f;
    bf16* o = outp + r * ld + c;
    if constexpr (kVec) {
      const uint4 gv = *reinterpret_cast<const uint4*>(gate + i), uv = *reinterpret_cast<const uint4*>(up + i);
      *reinterpret_cast<uint4*>(o) = swiglu8(gv, uv);
    } else {
      *o = __float2bfloat16_rn(swiglu(load1(gate + i), load1(up + i)));
    }
  }
}

// gate, up (N, f) bf16, f % 16 == 0; outp (N, ld) bf16: h into columns 0..f, s·u into f..f+mr; a: A (mr, f) bf16
// row-major; mr % 8 == 0, <= 64. As swiglu_backward_g_kernel, with one tile.
__global__ void __launch_bounds__(kNarrowThreads) swiglu_forward_u_kernel(const bf16* gate, const bf16* up, bf16* outp,
                                                                          int64_t f, int64_t ld, int64_t N,
                                                                          const bf16* a, int mr, float s) {
  pdl_enter();
  __shared__ __align__(16) Tile tile;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kNarrowRows;
  const int sr = threadIdx.x >> 4, sc = (threadIdx.x & 15) * 8;
  const int64_t grow = row0 + sr;
  const bool mine = warp * 8 < mr;
  const bf16* ar = a + static_cast<int64_t>(mine ? warp * 8 + (lane >> 2) : 0) * f + 2 * (lane & 3);  // A's row n
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  const bf16* const src[2] = {gate, up};
  ChunkLoads<2> next;
  next.load(src, grow, N, f, 0, sc);
  for (int64_t c0 = 0; c0 < f; c0 += kNarrowChunk) {
    const int width = static_cast<int>(min(static_cast<int64_t>(kNarrowChunk), f - c0));  // a multiple of 16
    BFrags bf;
    b_frags_rows(bf, ar, c0, width, mine);
    const ChunkLoads<2> cur = next;
    next.load(src, grow, N, f, c0 + kNarrowChunk, sc);
#pragma unroll
    for (int q = 0; q < kStageGroups; ++q) {
      const int j = sc + 128 * q;
      if (j >= width) continue;
      uint4 hv = make_uint4(0u, 0u, 0u, 0u);
      if (grow < N) {
        hv = swiglu8(cur.v[0][q], cur.v[1][q]);
        *reinterpret_cast<uint4*>(outp + grow * ld + c0 + j) = hv;
      }
      *reinterpret_cast<uint4*>(&tile[sr][j]) = hv;
    }
    __syncthreads();
    if (mine) mma_chunk(acc, tile, bf, width, lane);
    __syncthreads();
  }
  if (mine) store_narrow(outp, ld, row0, N, f, s, acc, warp, lane);
}

void swiglu_forward_packed(const SwigluForwardArgs& p, int64_t n) {
  const int64_t f = p.gate->dim(1), ld = p.out_packed->dim(1);
  bf16* out = p.out_packed->data_as<bf16>();
  const bf16* ua = p.u_a ? bf16_ptr(*p.u_a) + p.u_row0 * f : nullptr;  // A's rows (ops/swiglu.h's u_a)
  if (ua && p.gate->dtype() == DType::BF16) {
    const bf16 *g = p.gate->data_as<bf16>(), *u = p.up->data_as<bf16>();
    const int64_t rows = p.gate->dim(0);
    if (f % 16 == 0 && ld % 8 == 0 && aligned16({g, u, out}) && aligned(ua, 4) && p.u_rows % 8 == 0 && p.u_rows <= kNarrowMax) {
      const unsigned ctas = static_cast<unsigned>((rows + kNarrowRows - 1) / kNarrowRows);
      launch("swiglu_forward_u_kernel", swiglu_forward_u_kernel, ctas, kNarrowThreads, 0, stream(), g, u, out, f, ld,
             rows, ua, static_cast<int>(p.u_rows), p.u_scale);
      return;
    }
  }
  if (p.gate->dtype() == DType::BF16) {
    const bf16 *g = p.gate->data_as<bf16>(), *u = p.up->data_as<bf16>();
    if (f % 8 == 0 && ld % 8 == 0 && aligned16({g, u, out})) {
      launch("swiglu_forward_packed_kernel", swiglu_forward_packed_kernel<bf16, true>, grid_1d(n / 8, 256), 256, 0,
             stream(), g, u, out, f, ld, n);
    } else {
      launch("swiglu_forward_packed_kernel", swiglu_forward_packed_kernel<bf16, false>, grid_1d(n, 256), 256, 0,
             stream(), g, u, out, f, ld, n);
    }
  } else {
    launch("swiglu_forward_packed_kernel", swiglu_forward_packed_kernel<float, false>, grid_1d(n, 256), 256, 0,
           stream(), p.gate->data_as<float>(), p.up->data_as<float>(), out, f, ld, n);
  }
  if (ua) {  // down_proj's product (lora_linear.cu): s·u (N, u_rows) = s · h·Aᵀ into out_packed's columns F..
    const OpPart part("u = h A^T (swiglu's u_a)", Device::CUDA);
    GemmArgs g;
    g.M = p.gate->dim(0); g.N = p.u_rows; g.K[0] = f;
    g.a[0] = bf16_operand(out, ld, false);
    g.b[0] = bf16_operand(ua, f, true);  // A stored (u_rows, F) = (N, K)
    g.alpha = p.u_scale;
    g.c16 = out + f; g.ldc = ld;
    gemm(g);
  }
}

void swiglu_forward_bf16(const SwigluForwardArgs& p, int64_t n) {
  const bf16 *g = p.gate->data_as<bf16>(), *u = p.up->data_as<bf16>();
  bf16* o = p.out->data_as<bf16>();
  int64_t begin = 0;
  if (aligned16({g, u, o}) && n >= 8) {
    begin = n / 8 * 8;
    launch("swiglu_forward_bf16_kernel8", swiglu_forward_bf16_kernel8, grid_1d(n / 8, 256), 256, 0, stream(),
           reinterpret_cast<const uint4*>(g), reinterpret_cast<const uint4*>(u), reinterpret_cast<uint4*>(o), n / 8);
  }
  if (begin < n) {
    launch("swiglu_forward_bf16_kernel", swiglu_forward_bf16_kernel, grid_1d(n - begin, 256), 256, 0, stream(), g, u, o,
           begin, n);
  }
}

void swiglu_backward_bf16(const SwigluBackwardArgs& p, int64_t n) {
  const bf16 *d = p.dout->data_as<bf16>(), *g = p.gate->data_as<bf16>(), *u = p.up->data_as<bf16>();
  bf16 *dg = p.dgate->data_as<bf16>(), *du = p.dup->data_as<bf16>();
  int64_t begin = 0;
  if (aligned16({d, g, u, dg, du}) && n >= 8) {
    begin = n / 8 * 8;
    launch("swiglu_backward_bf16_kernel8", swiglu_backward_bf16_kernel8, grid_1d(n / 8, 256), 256, 0, stream(),
           reinterpret_cast<const uint4*>(d), reinterpret_cast<const uint4*>(g), reinterpret_cast<const uint4*>(u),
           reinterpret_cast<uint4*>(dg), reinterpret_cast<uint4*>(du), n / 8);
  }
  if (begin < n) {
    launch("swiglu_backward_bf16_kernel", swiglu_backward_bf16_kernel, grid_1d(n - begin, 256), 256, 0, stream(), d, g,
           u, dg, du, begin, n);
  }
}

}  // namespace

void swiglu_forward(const SwigluForwardArgs& p) {
  const int64_t n = p.gate->numel();
  if (n == 0) return;
  if (p.out_packed) return swiglu_forward_packed(p, n);
  if (p.gate->dtype() == DType::BF16) return swiglu_forward_bf16(p, n);  // every tensor bf16 (ops/swiglu.cpp)
  const float *g = p.gate->data_as<float>(), *u = p.up->data_as<float>();
  float* o = p.out->data_as<float>();
  int64_t begin = 0;
  if (aligned16({g, u, o}) && n >= 4) {
    begin = n / 4 * 4;
    launch("swiglu_forward_kernel4", swiglu_forward_kernel4, grid_1d(n / 4, 256), 256, 0, stream(),
           reinterpret_cast<const float4*>(g), reinterpret_cast<const float4*>(u), reinterpret_cast<float4*>(o), n / 4);
  }
  if (begin < n) {
    launch("swiglu_forward_kernel", swiglu_forward_kernel, grid_1d(n - begin, 256), 256, 0, stream(), g, u, o, begin,
           n);
  }
}

void swiglu_backward(const SwigluBackwardArgs& p) {
  const int64_t n = p.gate->numel();
  if (n == 0) return;
  if (p.dgu) return swiglu_backward_packed(p, n);
  if (p.gate->dtype() == DType::BF16) return swiglu_backward_bf16(p, n);
  const float *d = p.dout->data_as<float>(), *g = p.gate->data_as<float>(), *u = p.up->data_as<float>();
  float *dg = p.dgate->data_as<float>(), *du = p.dup->data_as<float>();
  int64_t begin = 0;
  if (aligned16({d, g, u, dg, du}) && n >= 4) {
    begin = n / 4 * 4;
    launch("swiglu_backward_kernel4", swiglu_backward_kernel4, grid_1d(n / 4, 256), 256, 0, stream(),
           reinterpret_cast<const float4*>(d), reinterpret_cast<const float4*>(g), reinterpret_cast<const float4*>(u),
           reinterpret_cast<float4*>(dg), reinterpret_cast<float4*>(du), n / 4);
  }
  if (begin < n) {
    launch("swiglu_backward_kernel", swiglu_backward_kernel, grid_1d(n - begin, 256), 256, 0, stream(), d, g, u, dg, du,
           begin, n);
  }
}

}  // namespace cuda
}  // namespace instill
