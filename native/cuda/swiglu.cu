// swiglu on CUDA (ops/swiglu.h): elementwise, f32, σ(g) = 1 / (1 + exp(−g)) with
// the accurate expf (no fast-math), so it matches the CPU to f32 rounding.
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
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n4;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4 g = gate[i], u = up[i];
    out[i] = make_float4(swiglu(g.x, u.x), swiglu(g.y, u.y), swiglu(g.z, u.z), swiglu(g.w, u.w));
  }
}

__global__ void swiglu_forward_kernel(const float* gate, const float* up, float* out, int64_t begin, int64_t n) {
  for (int64_t i = begin + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = swiglu(gate[i], up[i]);
}

__global__ void swiglu_backward_kernel4(const float4* dout, const float4* gate, const float4* up, float4* dgate,
                                        float4* dup, int64_t n4) {
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
  for (int64_t i = begin + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    swiglu_grad(dout[i], gate[i], up[i], dgate[i], dup[i]);
}

}  // namespace

void swiglu_forward(const SwigluForwardArgs& p) {
  const int64_t n = p.gate->numel();
  if (n == 0) return;
  const float *g = p.gate->data_as<float>(), *u = p.up->data_as<float>();
  float* o = p.out->data_as<float>();
  int64_t begin = 0;
  if (aligned16({g, u, o}) && n >= 4) {
    begin = n / 4 * 4;
    swiglu_forward_kernel4<<<grid_1d(n / 4, 256), 256, 0, stream()>>>(
        reinterpret_cast<const float4*>(g), reinterpret_cast<const float4*>(u), reinterpret_cast<float4*>(o), n / 4);
    check_launch("swiglu_forward_kernel4");
  }
  if (begin < n) {
    swiglu_forward_kernel<<<grid_1d(n - begin, 256), 256, 0, stream()>>>(g, u, o, begin, n);
    check_launch("swiglu_forward_kernel");
  }
}

void swiglu_backward(const SwigluBackwardArgs& p) {
  const int64_t n = p.gate->numel();
  if (n == 0) return;
  const float *d = p.dout->data_as<float>(), *g = p.gate->data_as<float>(), *u = p.up->data_as<float>();
  float *dg = p.dgate->data_as<float>(), *du = p.dup->data_as<float>();
  int64_t begin = 0;
  if (aligned16({d, g, u, dg, du}) && n >= 4) {
    begin = n / 4 * 4;
    swiglu_backward_kernel4<<<grid_1d(n / 4, 256), 256, 0, stream()>>>(
        reinterpret_cast<const float4*>(d), reinterpret_cast<const float4*>(g), reinterpret_cast<const float4*>(u),
        reinterpret_cast<float4*>(dg), reinterpret_cast<float4*>(du), n / 4);
    check_launch("swiglu_backward_kernel4");
  }
  if (begin < n) {
    swiglu_backward_kernel<<<grid_1d(n - begin, 256), 256, 0, stream()>>>(d, g, u, dg, du, begin, n);
    check_launch("swiglu_backward_kernel");
  }
}

}  // namespace cuda
}  // namespace instill
