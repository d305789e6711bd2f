// CPU masked cross-entropy and the fused LM head + cross-entropy
// (see ops/cross_entropy.h for the math and the memory bound).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/ops.h"
#include "cpu/row_kernels.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {

namespace {

int64_t count_targets(const int32_t* t, int64_t n, int32_t ignore) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += t[i] != ignore;
  return c;
}

}  // namespace

CrossEntropyResult masked_cross_entropy(const MaskedCrossEntropyArgs& p) {
  const int64_t n = p.logits->dim(0), v = p.logits->dim(1);
  const float* logits = p.logits->data_as<float>();
  const int32_t* targets = p.targets->data_as<int32_t>();
  float* dlogits = p.dlogits ? p.dlogits->data_as<float>() : nullptr;
  const int64_t count = count_targets(targets, n, p.ignore_index);
  const double norm = p.normalizer > 0 ? p.normalizer : static_cast<double>(count);
  const double inv_norm = count > 0 ? 1.0 / norm : 0.0;
  std::vector<double> row_loss(static_cast<size_t>(n), 0.0);
  const XentRowFn xent_row = row_kernels_for_active_isa().xent;
  parallel_range(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      float* out = dlogits ? dlogits + i * v : nullptr;
      if (targets[i] == p.ignore_index) {
        if (out) std::memset(out, 0, static_cast<size_t>(v) * sizeof(float));
        continue;
      }
      row_loss[static_cast<size_t>(i)] = xent_row(logits + i * v, out, v, targets[i], inv_norm);
    }
  });
  double total = 0.0;
  for (double l : row_loss) total += l;
  return CrossEntropyResult{count > 0 ? total * inv_norm : 0.0, count};
}

CrossEntropyResult linear_cross_entropy(const LinearCrossEntropyArgs& p) {
  const int64_t n = p.h->dim(0), c = p.h->dim(1), v = p.w->dim(0);
  const float* h = p.h->data_as<float>();
  const int32_t* targets = p.targets->data_as<int32_t>();
  float* dh = p.dh ? p.dh->data_as<float>() : nullptr;
  float* dw = p.dw ? p.dw->data_as<float>() : nullptr;

  // Only rows with a target reach the head.
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < n; ++i)
    if (targets[i] != p.ignore_index) rows.push_back(i);
  const int64_t count = static_cast<int64_t>(rows.size());
  const double norm = p.normalizer > 0 ? p.normalizer : static_cast<double>(count);
  const double inv_norm = count > 0 ? 1.0 / norm : 0.0;

  if (dh) std::memset(dh, 0, static_cast<size_t>(n * c) * sizeof(float));
  if (dw && !p.accumulate_dw) std::memset(dw, 0, static_cast<size_t>(v * c) * sizeof(float));
  if (count == 0) return CrossEntropyResult{0.0, 0};

  const int64_t auto_rows =
      std::max(kLinearCrossEntropyMinRows, kLinearCrossEntropyChunkBytes / (v * static_cast<int64_t>(sizeof(float))));
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(count, p.chunk_rows > 0 ? p.chunk_rows : auto_rows));
  Tensor hc = Tensor::empty({chunk, c}, DType::F32);       // gathered rows of h
  Tensor logits = Tensor::empty({chunk, v}, DType::F32);   // logits, then their gradient
  Tensor dhc = dh ? Tensor::empty({chunk, c}, DType::F32) : Tensor();
  std::vector<int32_t> tc(static_cast<size_t>(chunk));
  std::vector<double> row_loss(static_cast<size_t>(chunk));
  const GemmOperand wop_t{p.w->data(), p.w->dtype(), c, true};
  const GemmOperand wop{p.w->data(), p.w->dtype(), c, false};
  const bool want_grad = dh || dw;
  const XentRowFn xent_row = row_kernels_for_active_isa().xent;
  double total = 0.0;

  for (int64_t r0 = 0; r0 < count; r0 += chunk) {
    const int64_t m = std::min(chunk, count - r0);
    float* hcp = hc.data_as<float>();
    for (int64_t i = 0; i < m; ++i) {
      const int64_t row = rows[static_cast<size_t>(r0 + i)];
      std::memcpy(hcp + i * c, h + row * c, static_cast<size_t>(c) * sizeof(float));
      tc[static_cast<size_t>(i)] = targets[row];
    }
    float* lg = logits.data_as<float>();
    gemm(m, v, c, 1.0f, GemmOperand{hcp, DType::F32, c, false}, wop_t, 0.0f, lg, v);
    parallel_range(m, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        float* row = lg + i * v;
        row_loss[static_cast<size_t>(i)] = xent_row(row, want_grad ? row : nullptr, v, tc[static_cast<size_t>(i)], inv_norm);
      }
    });
    for (int64_t i = 0; i < m; ++i) total += row_loss[static_cast<size_t>(i)];
    if (dh) {
      float* d = dhc.data_as<float>();
      gemm(m, c, v, 1.0f, GemmOperand{lg, DType::F32, v, false}, wop, 0.0f, d, c);
      for (int64_t i = 0; i < m; ++i) {
        const int64_t row = rows[static_cast<size_t>(r0 + i)];
        std::memcpy(dh + row * c, d + i * c, static_cast<size_t>(c) * sizeof(float));
      }
    }
    if (dw) {
      gemm(v, c, m, 1.0f, GemmOperand{lg, DType::F32, v, true}, GemmOperand{hcp, DType::F32, c, false}, 1.0f, dw, c);
    }
  }
  return CrossEntropyResult{total * inv_norm, count};
}

}  // namespace cpu
}  // namespace instill
