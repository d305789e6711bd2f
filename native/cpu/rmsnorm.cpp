// CPU rmsnorm (see ops/rmsnorm.h). Row sums in double; rows split over the pool.
// dw is reduced per thread range into a private buffer, then the buffers are summed serially in range order.
#include <cmath>
#include <algorithm>
#include <mutex>
#include <vector>

#include "cpu/activations.h"
#include "cpu/model_ops.h"
#include "runtime/dtype.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {

void rmsnorm_forward(const RmsnormForwardArgs& p) {
  if (p.y_packed) {  // into an f32 (N, C), then each row rounded into y_packed's first C columns
    Tensor y32 = Tensor::empty(p.x->shape(), DType::F32);
    RmsnormForwardArgs q = p;
    q.y = &y32;
    q.y_packed = nullptr;
    cpu::rmsnorm_forward(q);
    store_f32_columns(y32, *p.y_packed, 0);
    return;
  }
  const int64_t n = p.x->dim(0), c = p.x->dim(1);
  const float* x = p.x->data_as<float>();
  const float* w = p.w->data_as<float>();
  Tensor yt = f32_out(*p.y, false);  // a bf16 y: computed in f32, rounded once below
  float* y = yt.data_as<float>();
  float* rstd = p.rstd->data_as<float>();
  const double eps = p.eps;
  parallel_range(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float* xr = x + i * c;
      double ss = 0;
      for (int64_t j = 0; j < c; ++j) ss += static_cast<double>(xr[j]) * xr[j];
      const float r = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(c) + eps));
      rstd[i] = r;
      float* yr = y + i * c;
      for (int64_t j = 0; j < c; ++j) yr[j] = w[j] * (xr[j] * r);
    }
  });
  store_f32(yt, *p.y);
}

void rmsnorm_backward(const RmsnormBackwardArgs& p) {
  const int64_t n = p.x->dim(0), c = p.x->dim(1);
  const float* dy = p.dy->data_as<float>();
  const float* x = p.x->data_as<float>();
  const float* w = p.w->data_as<float>();
  const float* rstd = p.rstd->data_as<float>();
  float* dx = p.dx->data_as<float>();
  float* dw = p.dw ? p.dw->data_as<float>() : nullptr;
  std::mutex mu;
  std::vector<std::pair<int64_t, std::vector<double>>> parts;  // (range start, dw partial)
  const bool acc = p.accumulate_dx;
  parallel_range(n, [&](int64_t b, int64_t e) {
    std::vector<double> dwl(dw ? static_cast<size_t>(c) : 0, 0.0);
    for (int64_t i = b; i < e; ++i) {
      const float* dyr = dy + i * c;
      const float* xr = x + i * c;
      const double r = rstd[i];
      double dot = 0;
      for (int64_t j = 0; j < c; ++j) dot += static_cast<double>(w[j]) * dyr[j] * xr[j];
      const double k = r * r * r * dot / static_cast<double>(c);
      if (dw) {
        for (int64_t j = 0; j < c; ++j) dwl[static_cast<size_t>(j)] += static_cast<double>(dyr[j]) * xr[j] * r;
      }
      float* dxr = dx + i * c;
      for (int64_t j = 0; j < c; ++j) {
        const float g = static_cast<float>(r * w[j] * dyr[j] - xr[j] * k);
        dxr[j] = acc ? dxr[j] + g : g;
      }
      if (p.dx_packed) {  // dx's row rounded into the packed copy (ops/rmsnorm.h)
        uint16_t* pr = p.dx_packed->data_as<uint16_t>() + i * p.dx_packed->dim(1);
        for (int64_t j = 0; j < c; ++j) pr[j] = f32_to_bf16(dxr[j]);
      }
    }
    if (dw) {
      std::lock_guard<std::mutex> lock(mu);
      parts.emplace_back(b, std::move(dwl));
    }
  });
  if (dw) {
    // Sum the ranges' partials in range order, not in the order threads finished: the same bits
    // every run (a resumed full fine-tuning run must match a straight one).
    std::sort(parts.begin(), parts.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    for (int64_t j = 0; j < c; ++j) {
      double s = 0;
      for (const auto& pr : parts) s += pr.second[static_cast<size_t>(j)];
      dw[j] += static_cast<float>(s);
    }
  }
}

}  // namespace cpu
}  // namespace instill
