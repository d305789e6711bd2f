// adamw and sum_squares on CUDA (ops/adamw.h), each over its whole list of tensors
// in one launch. adamw: one block per chunk of 32768 elements of one tensor, the
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

// Both ops run a whole list of tensors in one launch: a host-built table of chunks (one block
// each) is uploaded, so an optimizer step is a few launches instead of one or two per tensor
// (224 tensors in a 16-layer LoRA: the launches, not the arithmetic, took 3 ms a step).
struct AdamwChunk {
  float* p;
  const float* g;
  float* m;
  float* v;
  int64_t n;  // elements in this chunk
};
constexpr int64_t kAdamwChunk = 32768;
constexpr int kAdamwThreads = 256;

__global__ void __launch_bounds__(kAdamwThreads)
    adamw_kernel(const AdamwChunk* __restrict__ chunks, double lr, double beta1, double beta2, double eps,
                 double weight_decay, double bc1, double sqrt_bc2, double grad_scale) {
  pdl_enter();
  const AdamwChunk c = chunks[blockIdx.x];
  for (int64_t i = threadIdx.x; i < c.n; i += kAdamwThreads) {
    double p = c.p[i], g = c.g[i];
    if (grad_scale != 1.0) g = static_cast<double>(static_cast<float>(g * grad_scale));
    p *= 1.0 - lr * weight_decay;
    const double mi = beta1 * c.m[i] + (1.0 - beta1) * g;
    const double vi = beta2 * c.v[i] + (1.0 - beta2) * g * g;
    p -= (lr / bc1) * mi / (sqrt(vi) / sqrt_bc2 + eps);
    c.m[i] = static_cast<float>(mi);
    c.v[i] = static_cast<float>(vi);
    c.p[i] = static_cast<float>(p);
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

struct SquaresChunk {
  const float* x;
  int64_t n;
};

// Block b sums the squares of its chunk (kSumSquaresChunk elements or a tensor's tail) into out[b].
__global__ void chunk_squares_kernel(const SquaresChunk* __restrict__ chunks, double* out) {
  pdl_enter();
  const SquaresChunk c = chunks[blockIdx.x];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < c.n; i += kReduceThreads) acc += static_cast<double>(c.x[i]) * c.x[i];
  const double total = block_sum(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}

__global__ void sum_kernel(const double* x, int64_t n, double* out) {
  pdl_enter();
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kReduceThreads) acc += x[i];
  const double total = block_sum(acc);
  if (threadIdx.x == 0) *out = total;
}

// A device copy of a host table (scratch bytes in an f32 tensor; allocations are 256-byte aligned).
template <typename T>
Tensor upload(const std::vector<T>& table) {
  const int64_t bytes = static_cast<int64_t>(table.size() * sizeof(T));
  Tensor t = Tensor::empty({(bytes + 3) / 4}, DType::F32, Device::CUDA);
  copy_bytes(t.data(), Device::CUDA, table.data(), Device::CPU, static_cast<size_t>(bytes));
  return t;
}
}  // namespace

void adamw_step(const AdamwArgs& a) {
  std::vector<AdamwChunk> chunks;
  for (int64_t t = 0; t < a.count; ++t) {
    const AdamwTensors& e = a.tensors[t];
    const int64_t n = e.param->numel();
    for (int64_t i = 0; i < n; i += kAdamwChunk)
      chunks.push_back({e.param->data_as<float>() + i, e.grad->data_as<float>() + i, e.m->data_as<float>() + i,
                        e.v->data_as<float>() + i, std::min(kAdamwChunk, n - i)});
  }
  if (chunks.empty()) return;
  const Tensor table = upload(chunks);
  const double t = static_cast<double>(a.step);
  const double bc1 = 1.0 - std::pow(a.beta1, t), bc2 = 1.0 - std::pow(a.beta2, t);
  launch("adamw_kernel", adamw_kernel, static_cast<unsigned>(chunks.size()), kAdamwThreads, 0, stream(),
         reinterpret_cast<const AdamwChunk*>(table.data()), a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, bc1,
         std::sqrt(bc2), a.grad_scale);
}

double sum_squares(const SumSquaresArgs& a) {
  std::vector<SquaresChunk> chunks;
  for (int64_t t = 0; t < a.count; ++t) {
    const Tensor& x = *a.tensors[t];
    for (int64_t i = 0; i < x.numel(); i += kSumSquaresChunk)
      chunks.push_back({x.data_as<float>() + i, std::min(kSumSquaresChunk, x.numel() - i)});
  }
  if (chunks.empty()) return 0.0;
  const int64_t slots = static_cast<int64_t>(chunks.size());
  const Tensor table = upload(chunks);
  Tensor partial = Tensor::empty({2 * (slots + 1)}, DType::F32, Device::CUDA);  // doubles
  double* part = reinterpret_cast<double*>(partial.data_as<float>());
  launch("chunk_squares_kernel", chunk_squares_kernel, static_cast<unsigned>(slots), kReduceThreads, 0, stream(),
         reinterpret_cast<const SquaresChunk*>(table.data()), part);
  launch("sum_kernel", sum_kernel, 1, kReduceThreads, 0, stream(), part, slots, part + slots);
  double result = 0.0;
  copy_bytes(&result, Device::CPU, part + slots, Device::CUDA, sizeof(double));  // waits for the stream
  return result;
}

}  // namespace cuda
}  // namespace instill
