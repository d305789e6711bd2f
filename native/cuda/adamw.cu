// adamw and sum_squares on CUDA (ops/adamw.h). adamw: one thread per element, the
// update in double as the CPU does it (torch.optim.AdamW semantics), stored f32.
// sum_squares: one block per chunk of kSumSquaresChunk elements writes the chunk's
// sum (a tree in shared memory, in double) to its slot of one buffer for every
// tensor; one block then adds the slots in a fixed tree. No atomics: the same
// inputs give the same bits.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/common.cuh"
#include "ops/adamw.h"
#include "runtime/device.h"

namespace instill {
namespace cuda {

namespace {
__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n, double lr, double beta1,
                             double beta2, double eps, double weight_decay, double bc1, double sqrt_bc2,
                             double grad_scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double p = param[i], g = grad[i];
    if (grad_scale != 1.0) g = static_cast<double>(static_cast<float>(g * grad_scale));
    p *= 1.0 - lr * weight_decay;
    const double mi = beta1 * m[i] + (1.0 - beta1) * g;
    const double vi = beta2 * v[i] + (1.0 - beta2) * g * g;
    p -= (lr / bc1) * mi / (sqrt(vi) / sqrt_bc2 + eps);
    m[i] = static_cast<float>(mi);
    v[i] = static_cast<float>(vi);
    param[i] = static_cast<float>(p);
  }
}

constexpr int kReduceThreads = 256;

// Sum of the block's per-thread values (a fixed tree); valid in thread 0.
__device__ double block_sum(double x) {
  __shared__ double s[kReduceThreads];
  s[threadIdx.x] = x;
  __syncthreads();
  for (int w = kReduceThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  return s[0];
}

// Block b sums x[b*chunk, (b+1)*chunk) into out[b].
__global__ void chunk_squares_kernel(const float* x, int64_t n, int64_t chunk, double* out) {
  const int64_t begin = blockIdx.x * chunk, end = begin + chunk < n ? begin + chunk : n;
  double acc = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kReduceThreads) acc += static_cast<double>(x[i]) * x[i];
  const double total = block_sum(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}

__global__ void sum_kernel(const double* x, int64_t n, double* out) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kReduceThreads) acc += x[i];
  const double total = block_sum(acc);
  if (threadIdx.x == 0) *out = total;
}
}  // namespace

void adamw_step(const AdamwArgs& a) {
  const int64_t n = a.param->numel();
  if (n == 0) return;
  const double t = static_cast<double>(a.step);
  const double bc1 = 1.0 - std::pow(a.beta1, t), bc2 = 1.0 - std::pow(a.beta2, t);
  adamw_kernel<<<grid_1d(n, 256), 256, 0, stream()>>>(a.param->data_as<float>(), a.grad->data_as<float>(),
                                                       a.m->data_as<float>(), a.v->data_as<float>(), n, a.lr, a.beta1,
                                                       a.beta2, a.eps, a.weight_decay, bc1, std::sqrt(bc2),
                                                       a.grad_scale);
  check_launch("adamw_kernel");
}

double sum_squares(const SumSquaresArgs& a) {
  int64_t slots = 0;
  for (int64_t t = 0; t < a.count; ++t) slots += (a.tensors[t]->numel() + kSumSquaresChunk - 1) / kSumSquaresChunk;
  if (slots == 0) return 0.0;
  // doubles in an f32 tensor of twice the length (scratch; device allocations are 256-byte aligned)
  Tensor partial = Tensor::empty({2 * (slots + 1)}, DType::F32, Device::CUDA);
  double* part = reinterpret_cast<double*>(partial.data_as<float>());
  int64_t at = 0;
  for (int64_t t = 0; t < a.count; ++t) {
    const Tensor& x = *a.tensors[t];
    const int64_t blocks = (x.numel() + kSumSquaresChunk - 1) / kSumSquaresChunk;
    if (blocks == 0) continue;
    chunk_squares_kernel<<<static_cast<unsigned>(blocks), kReduceThreads, 0, stream()>>>(
        x.data_as<float>(), x.numel(), kSumSquaresChunk, part + at);
    check_launch("chunk_squares_kernel");
    at += blocks;
  }
  sum_kernel<<<1, kReduceThreads, 0, stream()>>>(part, slots, part + slots);
  check_launch("sum_kernel");
  double result = 0.0;
  copy_bytes(&result, Device::CPU, part + slots, Device::CUDA, sizeof(double));  // waits for the stream
  return result;
}

}  // namespace cuda
}  // namespace instill
