// swiglu on CUDA (ops/swiglu.h): elementwise, f32, σ(g) = 1 / (1 + exp(−g)) with
// the accurate expf (no fast-math), so it matches the CPU to f32 rounding. bf16 tensors:
// the same math in f32 on the widened inputs, each output rounded once (to nearest even,
// as the CPU rounds), 8 elements a thread (16-byte loads and stores) where aligned.
#include <cuda_bf16.h>

#include "cuda/common.cuh"
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

void swiglu_backward_packed(const SwigluBackwardArgs& p, int64_t n) {
  const int64_t f = p.gate->dim(1), ld = p.dgu->dim(1);
  bf16* out = p.dgu->data_as<bf16>();
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

void swiglu_forward_packed(const SwigluForwardArgs& p, int64_t n) {
  const int64_t f = p.gate->dim(1), ld = p.out_packed->dim(1);
  bf16* out = p.out_packed->data_as<bf16>();
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
