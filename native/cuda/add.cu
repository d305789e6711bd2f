// add and bias_add on CUDA (ops/add.h): elementwise f32; out may alias a or b
// (each element is read and written by one thread). add runs 4 elements a thread
// where the pointers allow it.
#include "cuda/common.cuh"
#include "ops/add.h"

namespace instill {
namespace cuda {

namespace {
__global__ void add_kernel(const float* a, const float* b, float* out, int64_t begin, int64_t n) {
  pdl_enter();
  for (int64_t i = begin + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = a[i] + b[i];
}
// 4 elements a thread (16-byte loads and stores) over the first n4·4 elements, every pointer 16-byte aligned.
__global__ void add_kernel4(const float4* a, const float4* b, float4* out, int64_t n4) {
  pdl_enter();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n4;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4 x = a[i], y = b[i];
    out[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
  }
}
__global__ void bias_add_kernel(float* y, const float* bias, int64_t n, int64_t C) {  // y (N, C) +=, bias (C)
  pdl_enter();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] += bias[i % C];
}
}  // namespace

void add(const AddArgs& p) {
  const int64_t n = p.a->numel();
  if (n == 0) return;
  const float *a = p.a->data_as<float>(), *b = p.b->data_as<float>();
  float* out = p.out->data_as<float>();
  int64_t begin = 0;
  if (n >= 4 && aligned16({a, b, out})) {
    begin = n / 4 * 4;
    launch("add_kernel4", add_kernel4, grid_1d(n / 4, 256), 256, 0, stream(), reinterpret_cast<const float4*>(a),
           reinterpret_cast<const float4*>(b), reinterpret_cast<float4*>(out), n / 4);
  }
  if (begin < n) {
    launch("add_kernel", add_kernel, grid_1d(n - begin, 256), 256, 0, stream(), a, b, out, begin, n);
  }
}

void bias_add(const BiasAddArgs& p) {
  const int64_t n = p.y->numel(), C = p.bias->numel();
  if (n == 0 || C == 0) return;
  launch("bias_add_kernel", bias_add_kernel, grid_1d(n, 256), 256, 0, stream(), p.y->data_as<float>(),
         p.bias->data_as<float>(), n, C);
}

}  // namespace cuda
}  // namespace instill
