// adamw and sum_squares on CUDA (ops/adamw.h), each over its whole list of tensors
// in one launch. adamw: one block per chunk of 32768 elements of one tensor, the
// update in double as the CPU does it (torch.optim.AdamW semantics), stored f32.
// sum_squares: one block per chunk of kSumSquaresChunk elements writes the chunk's
// sum (a tree in shared memory, in double) to its slot of one buffer for every
// tensor; one block then adds the slots in a fixed tree. No atomics: the same
// inputs give the same bits.
// INSTILL_CUDA_NEXT `optim_loads` (waiting for a GPU): both with more bytes in flight and the same bits. adamw's loop
// stores p, m and v before its next loads, which the compiler must keep in order (the pointers may alias), so each
// thread had 16 bytes in flight: 0.18–0.20 ms a 1B step for ~316 MB (~3x its bytes' time). The piece takes four
// elements an iteration through float4s (16-byte aligned chunks; a scalar tail). sum_squares' threads each add 256
// elements in order; the piece loads 8 of them before adding them in that order (0.09–0.11 ms for 45 MB).
#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "cuda/common.cuh"
#include "ops/adamw.h"
#include "runtime/device.h"
#include "runtime/op_profile.h"

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

struct AdamwHyper {
  double lr, beta1, beta2, eps, weight_decay, bc1, sqrt_bc2, grad_scale;
};

// Element i's update, in the CPU's double arithmetic: the one expression both kernels use (the wide kernel's on its
// float4s' four values in registers)
__device__ __forceinline__ void adamw_one(float* pp, const float* gp, float* mp, float* vp, int64_t i, const AdamwHyper& a) {
  double p = pp[i], g = gp[i];
  if (a.grad_scale != 1.0) g = static_cast<double>(static_cast<float>(g * a.grad_scale));
  p *= 1.0 - a.lr * a.weight_decay;
  const double mi = a.beta1 * mp[i] + (1.0 - a.beta1) * g;
  const double vi = a.beta2 * vp[i] + (1.0 - a.beta2) * g * g;
  p -= (a.lr / a.bc1) * mi / (sqrt(vi) / a.sqrt_bc2 + a.eps);
  mp[i] = static_cast<float>(mi);
  vp[i] = static_cast<float>(vi);
  pp[i] = static_cast<float>(p);
}

__global__ void __launch_bounds__(kAdamwThreads)
    adamw_kernel(const AdamwChunk* __restrict__ chunks, double lr, double beta1, double beta2, double eps,
                 double weight_decay, double bc1, double sqrt_bc2, double grad_scale) {
  pdl_enter();
  const AdamwChunk c = chunks[blockIdx.x];
  const AdamwHyper a{lr, beta1, beta2, eps, weight_decay, bc1, sqrt_bc2, grad_scale};
  for (int64_t i = threadIdx.x; i < c.n; i += kAdamwThreads) adamw_one(c.p, c.g, c.m, c.v, i, a);
}

// optim_loads: four elements an iteration through float4s where the chunk's four arrays are 16-byte aligned, the
// rest (and an unaligned chunk) one at a time, each element's update adamw_one's
__global__ void __launch_bounds__(kAdamwThreads)
    adamw_wide_kernel(const AdamwChunk* __restrict__ chunks, double lr, double beta1, double beta2, double eps,
                      double weight_decay, double bc1, double sqrt_bc2, double grad_scale) {
  pdl_enter();
  const AdamwChunk c = chunks[blockIdx.x];
  const AdamwHyper a{lr, beta1, beta2, eps, weight_decay, bc1, sqrt_bc2, grad_scale};
  const bool vec = ((reinterpret_cast<uintptr_t>(c.p) | reinterpret_cast<uintptr_t>(c.g) |
                     reinterpret_cast<uintptr_t>(c.m) | reinterpret_cast<uintptr_t>(c.v)) & 15) == 0;
  const int64_t n4 = vec ? c.n / 4 : 0;
  for (int64_t j = threadIdx.x; j < n4; j += kAdamwThreads) {
    float4 p = reinterpret_cast<const float4*>(c.p)[j], m = reinterpret_cast<const float4*>(c.m)[j],
           v = reinterpret_cast<const float4*>(c.v)[j];
    const float4 g = reinterpret_cast<const float4*>(c.g)[j];
#pragma unroll
    for (int k = 0; k < 4; ++k)
      adamw_one(&p.x, &g.x, &m.x, &v.x, k, a);
    reinterpret_cast<float4*>(c.m)[j] = m;
    reinterpret_cast<float4*>(c.v)[j] = v;
    reinterpret_cast<float4*>(c.p)[j] = p;
  }
  for (int64_t i = 4 * n4 + threadIdx.x; i < c.n; i += kAdamwThreads) adamw_one(c.p, c.g, c.m, c.v, i, a);
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

// Block b sums the squares of its chunk (kSumSquaresChunk elements or a tensor's tail) into out[b]. kWide
// (optim_loads): each thread's elements i, i + kReduceThreads, … loaded 8 at a time, then added in that same order.
template <bool kWide>
__global__ void chunk_squares_kernel(const SquaresChunk* __restrict__ chunks, double* out) {
  pdl_enter();
  const SquaresChunk c = chunks[blockIdx.x];
  double acc = 0.0;
  int64_t i = threadIdx.x;
  if (kWide) {
    constexpr int kAt = 8;
    for (; i + (kAt - 1) * kReduceThreads < c.n; i += kAt * kReduceThreads) {
      float x[kAt];
#pragma unroll
      for (int k = 0; k < kAt; ++k) x[k] = c.x[i + k * kReduceThreads];
#pragma unroll
      for (int k = 0; k < kAt; ++k) acc += static_cast<double>(x[k]) * x[k];
    }
  }
  for (; i < c.n; i += kReduceThreads) acc += static_cast<double>(c.x[i]) * c.x[i];
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
  const bool wide = next_kernels(Next::OptimLoads);
  std::optional<OpPart> kernel_part;  // (the piece's kernel named in the op profile)
  if (wide) kernel_part.emplace("float4s (next)", Device::CUDA);
  launch(wide ? "adamw_wide_kernel" : "adamw_kernel", wide ? adamw_wide_kernel : adamw_kernel,
         static_cast<unsigned>(chunks.size()), kAdamwThreads, 0, stream(), reinterpret_cast<const AdamwChunk*>(table.data()),
         a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, bc1, std::sqrt(bc2), a.grad_scale);
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
  const bool wide = next_kernels(Next::OptimLoads);
  std::optional<OpPart> kernel_part;
  if (wide) kernel_part.emplace("8 loads at a time (next)", Device::CUDA);
  launch("chunk_squares_kernel", wide ? chunk_squares_kernel<true> : chunk_squares_kernel<false>,
         static_cast<unsigned>(slots), kReduceThreads, 0, stream(), reinterpret_cast<const SquaresChunk*>(table.data()),
         part);
  launch("sum_kernel", sum_kernel, 1, kReduceThreads, 0, stream(), part, slots, part + slots);
  double result = 0.0;
  copy_bytes(&result, Device::CPU, part + slots, Device::CUDA, sizeof(double));  // waits for the stream
  return result;
}

}  // namespace cuda
}  // namespace instill
