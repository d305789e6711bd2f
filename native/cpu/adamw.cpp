// CPU AdamW and the gradient norm's sum of squares (see ops/adamw.h): per element in
// double, stored f32.
#include <cmath>
#include <vector>

#include "cpu/model_ops.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {

void adamw_step(const AdamwArgs& p) {
  const double bc1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(p.beta2, static_cast<double>(p.step));
  const double step_size = p.lr / bc1, sqrt_bc2 = std::sqrt(bc2), decay = 1.0 - p.lr * p.weight_decay;
  const double b1 = p.beta1, b2 = p.beta2, eps = p.eps, scale = p.grad_scale;
  for (int64_t t = 0; t < p.count; ++t) {
    const AdamwTensors& e = p.tensors[t];
    float* w = e.param->data_as<float>();
    const float* g = e.grad->data_as<float>();
    float* m = e.m->data_as<float>();
    float* v = e.v->data_as<float>();
    parallel_range(e.param->numel(), [&](int64_t b, int64_t end) {
      for (int64_t i = b; i < end; ++i) {
        const double gi = scale == 1.0 ? g[i] : static_cast<double>(static_cast<float>(g[i] * scale));
        const double mi = b1 * m[i] + (1.0 - b1) * gi;
        const double vi = b2 * v[i] + (1.0 - b2) * gi * gi;
        m[i] = static_cast<float>(mi);
        v[i] = static_cast<float>(vi);
        const double denom = std::sqrt(vi) / sqrt_bc2 + eps;
        w[i] = static_cast<float>(static_cast<double>(w[i]) * decay - step_size * mi / denom);
      }
    });
  }
}

double sum_squares(const SumSquaresArgs& p) {
  struct Chunk {
    const float* x;
    int64_t n;
  };
  std::vector<Chunk> chunks;
  for (int64_t t = 0; t < p.count; ++t) {
    const Tensor& ten = *p.tensors[t];
    const float* x = ten.numel() ? ten.data_as<float>() : nullptr;
    for (int64_t i = 0; i < ten.numel(); i += kSumSquaresChunk)
      chunks.push_back({x + i, std::min(kSumSquaresChunk, ten.numel() - i)});
  }
  std::vector<double> sums(chunks.size(), 0.0);
  parallel_for(static_cast<int64_t>(chunks.size()), [&](int64_t c) {
    const Chunk ch = chunks[static_cast<size_t>(c)];
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // fixed lanes: vectorised, and the same order every time
    int64_t i = 0;
    for (; i + 8 <= ch.n; i += 8)
      for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(ch.x[i + l]) * ch.x[i + l];
    for (; i < ch.n; ++i) acc[0] += static_cast<double>(ch.x[i]) * ch.x[i];
    sums[static_cast<size_t>(c)] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  });
  double total = 0.0;
  for (double s : sums) total += s;
  return total;
}

}  // namespace cpu
}  // namespace instill
