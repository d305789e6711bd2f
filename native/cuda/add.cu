// add and bias_add on CUDA (ops/add.h): elementwise f32; out may alias a or b
// (each element is read and written by one thread).
#include "cuda/common.cuh"
#include "ops/add.h"

namespace instill {
namespace cuda {

namespace {
__global__ void add_kernel(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = a[i] + b[i];
}
__global__ void bias_add_kernel(float* y, const float* bias, int64_t n, int64_t C) {  // y (N, C) +=, bias (C)
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] += bias[i % C];
}
}  // namespace

void add(const AddArgs& p) {
  const int64_t n = p.a->numel();
  if (n == 0) return;
  add_kernel<<<grid_1d(n, 256), 256, 0, stream()>>>(p.a->data_as<float>(), p.b->data_as<float>(), p.out->data_as<float>(), n);
  check_launch("add_kernel");
}

void bias_add(const BiasAddArgs& p) {
  const int64_t n = p.y->numel(), C = p.bias->numel();
  if (n == 0 || C == 0) return;
  bias_add_kernel<<<grid_1d(n, 256), 256, 0, stream()>>>(p.y->data_as<float>(), p.bias->data_as<float>(), n, C);
  check_launch("bias_add_kernel");
}

}  // namespace cuda
}  // namespace instill
