// masked_cross_entropy and linear_cross_entropy on CUDA (ops/cross_entropy.h).
//
// Targets are copied to the host once per call (N int32s): there they are
// range-checked (E_RANGE, as on the CPU), counted (the default normalizer), and,
// for the fused op, turned into the list of rows that reach the LM head.
// ce_rows_kernel: one block per row: max, Σexp(x − max) in f32 (then the row's
// loss added in double to one accumulator), and dlogits = (softmax − onehot) /
// normalizer written in place when asked (every thread reads the target's logit
// before the first reduction, and writes only after it).
// linear_cross_entropy: ignored rows never reach the head; kept rows go through
// in chunks of `chunk_rows` (default: as many as fit in kCudaChunkBytes of f32
// logits — 256 MiB, larger than the CPU's 32 MiB because a GPU needs wide
// products to be fast; ~520 rows at V = 128256): gather h rows, logits = hc·Wᵀ,
// softmax gradient in place, dh rows = dlogits·W scattered back, dW +=
// dlogitsᵀ·hc. Peak scratch: chunk·(V + 2C) f32, never N·V.
#include <algorithm>
#include <cmath>

#include "cuda/gemm.h"
#include "ops/cross_entropy.h"

namespace instill {
namespace cuda {

namespace {

constexpr int64_t kCudaChunkBytes = 256ll << 20;
constexpr int kThreads = 256;

__global__ void ce_rows_kernel(const float* logits, const int32_t* targets, int64_t V, int32_t ignore_index,
                               float inv_norm, float* dlogits, double* loss_sum) {
  // logits, dlogits (M, V) (may alias); targets (M)
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const float* x = logits + row * V;
  const int32_t t = targets[row];
  const bool ignored = t == ignore_index || t < 0 || t >= V;
  const float xt = ignored ? 0.f : x[t];
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, x[j]);
  mx = block_max(mx, red);
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += expf(x[j] - mx);
  s = block_sum(s, red);
  const float lse = mx + logf(s);
  if (threadIdx.x == 0 && !ignored) atomicAdd(loss_sum, static_cast<double>(lse) - static_cast<double>(xt));
  if (dlogits) {
    float* d = dlogits + row * V;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
      const float v = ignored ? 0.f : (expf(x[j] - lse) - (j == t ? 1.f : 0.f)) * inv_norm;
      d[j] = v;
    }
  }
}

__global__ void gather_rows_kernel(const float* src, const int32_t* rows, int64_t M, int64_t C, float* dst) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < M * C;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = src[static_cast<int64_t>(rows[i / C]) * C + i % C];
}

__global__ void scatter_rows_kernel(const float* src, const int32_t* rows, int64_t M, int64_t C, float* dst) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < M * C;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[static_cast<int64_t>(rows[i / C]) * C + i % C] = src[i];
}

void check_targets(const std::vector<int32_t>& t, int64_t V, int32_t ignore_index) {
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == ignore_index) continue;
    if (t[i] < 0 || t[i] >= V) {
      fail(ErrorCode::Range, "targets[", i, "] = ", t[i], " is outside the vocabulary [0, ", V,
           ") and is not the ignore index ", ignore_index);
    }
  }
}

double read_loss(const Tensor& acc) {
  double v = 0;
  copy_bytes(&v, Device::CPU, acc.data(), Device::CUDA, sizeof(double));
  return v;
}

}  // namespace

CrossEntropyResult masked_cross_entropy(const MaskedCrossEntropyArgs& p) {
  const int64_t N = p.logits->dim(0), V = p.logits->dim(1);
  const std::vector<int32_t> t = to_host_i32(*p.targets);
  check_targets(t, V, p.ignore_index);
  const int64_t count = static_cast<int64_t>(std::count_if(t.begin(), t.end(), [&](int32_t x) { return x != p.ignore_index; }));
  if (count == 0 || N == 0) {
    if (p.dlogits) fill_bytes(p.dlogits->data(), Device::CUDA, 0, p.dlogits->nbytes());
    return {0.0, 0};
  }
  const double norm = p.normalizer > 0 ? p.normalizer : static_cast<double>(count);
  Tensor acc64 = Tensor::zeros({2}, DType::F32, Device::CUDA);  // 8 bytes: one double
  ce_rows_kernel<<<static_cast<unsigned>(N), kThreads, 0, stream()>>>(
      p.logits->data_as<float>(), p.targets->data_as<int32_t>(), V, p.ignore_index, static_cast<float>(1.0 / norm),
      p.dlogits ? p.dlogits->data_as<float>() : nullptr, static_cast<double*>(acc64.data()));
  check_launch("ce_rows_kernel");
  return {read_loss(acc64) / norm, count};
}

CrossEntropyResult linear_cross_entropy(const LinearCrossEntropyArgs& p) {
  const Tensor &h = *p.h, &w = *p.w;
  const int64_t N = h.dim(0), C = h.dim(1), V = w.dim(0);
  const std::vector<int32_t> t = to_host_i32(*p.targets);
  check_targets(t, V, p.ignore_index);
  std::vector<int32_t> rows, kept_targets;
  for (int64_t i = 0; i < N; ++i) {
    if (t[static_cast<size_t>(i)] == p.ignore_index) continue;
    rows.push_back(static_cast<int32_t>(i));
    kept_targets.push_back(t[static_cast<size_t>(i)]);
  }
  const int64_t count = static_cast<int64_t>(rows.size());
  if (p.dh) fill_bytes(p.dh->data(), Device::CUDA, 0, p.dh->nbytes());
  if (p.dw && !p.accumulate_dw) fill_bytes(p.dw->data(), Device::CUDA, 0, p.dw->nbytes());
  if (count == 0) return {0.0, 0};
  const double norm = p.normalizer > 0 ? p.normalizer : static_cast<double>(count);

  int64_t chunk = p.chunk_rows > 0 ? p.chunk_rows : std::max<int64_t>(1, kCudaChunkBytes / (4 * std::max<int64_t>(V, 1)));
  chunk = std::min(chunk, count);
  Tensor rows_d = to_device_i32(rows), targets_d = to_device_i32(kept_targets);
  Tensor hc = Tensor::empty({chunk, C}, DType::F32, Device::CUDA);
  Tensor logits = Tensor::empty({chunk, V}, DType::F32, Device::CUDA);
  Tensor dhc = p.dh ? Tensor::empty({chunk, C}, DType::F32, Device::CUDA) : Tensor();
  Tensor acc64 = Tensor::zeros({2}, DType::F32, Device::CUDA);  // one double

  for (int64_t r0 = 0; r0 < count; r0 += chunk) {
    const int64_t m = std::min(chunk, count - r0);
    const int32_t* rows_c = rows_d.data_as<int32_t>() + r0;
    gather_rows_kernel<<<grid_1d(m * C, 256), 256, 0, stream()>>>(h.data_as<float>(), rows_c, m, C, hc.data_as<float>());
    check_launch("gather_rows_kernel");
    {  // logits (m, V) = hc (m, C) · Wᵀ,  W stored (V, C)
      GemmArgs g;
      g.M = m; g.N = V; g.K[0] = C;
      g.a[0] = operand(hc, false);
      g.b[0] = operand(w, true);
      g.c = logits.data_as<float>(); g.ldc = V;
      gemm(g);
    }
    ce_rows_kernel<<<static_cast<unsigned>(m), kThreads, 0, stream()>>>(
        logits.data_as<float>(), targets_d.data_as<int32_t>() + r0, V, p.ignore_index, static_cast<float>(1.0 / norm),
        (p.dh || p.dw) ? logits.data_as<float>() : nullptr, static_cast<double*>(acc64.data()));
    check_launch("ce_rows_kernel");
    if (p.dh) {  // dh rows (m, C) = dlogits (m, V) · W (V, C)
      GemmArgs g;
      g.M = m; g.N = C; g.K[0] = V;
      g.a[0] = operand(logits, false);
      g.b[0] = operand(w, false);
      g.c = dhc.data_as<float>(); g.ldc = C;
      gemm(g);
      scatter_rows_kernel<<<grid_1d(m * C, 256), 256, 0, stream()>>>(dhc.data_as<float>(), rows_c, m, C,
                                                                      p.dh->data_as<float>());
      check_launch("scatter_rows_kernel");
    }
    if (p.dw) {  // dW (V, C) += dlogitsᵀ (V, m) · hc (m, C)
      GemmArgs g;
      g.M = V; g.N = C; g.K[0] = m;
      g.a[0] = operand(logits, true);  // stored (m, V) = (K, M)
      g.b[0] = operand(hc, false);
      g.beta = 1.f;
      g.c = p.dw->data_as<float>(); g.ldc = C;
      gemm(g);
    }
  }
  return {read_loss(acc64) / norm, count};
}

}  // namespace cuda
}  // namespace instill
