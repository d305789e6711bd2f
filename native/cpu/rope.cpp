// CPU rope (see ops/rope.h): θ = p·inv_freq[i] in f32 as Hugging Face computes it,
// cos/sin in f32; tokens split over the pool. In place is safe: each pair (i, i+D/2)
// is read before it is written.
#include <cmath>
#include <vector>

#include "cpu/activations.h"
#include "cpu/model_ops.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {

namespace {
void rope(const RopeArgs& p, float sign) {
  if (p.out_packed && !p.x2) {  // into an f32 (N, H·D), then rounded into out_packed's columns
    const Tensor x = f32_of(*p.x);
    Tensor out = Tensor::empty(x.shape(), DType::F32);
    RopeArgs a = p;
    a.x = &x;
    a.out = &out;
    a.out_packed = nullptr;
    rope(a, sign);
    return store_f32_columns(out.reshape({x.dim(0), x.dim(1) * x.dim(2)}), *p.out_packed, p.out_col);
  }
  if (p.x2) {  // a second tensor (ops/rope.h): two passes, the results of two calls
    RopeArgs a, b;
    rope_pair_parts(p, a, b);
    rope(a, sign);
    return rope(b, sign);
  }
  if (p.x->dtype() == DType::BF16) {  // bf16 activations: the f32 rotation of the widened x, rounded once
    const Tensor x = f32_of(*p.x);
    Tensor out = f32_out(*p.out, false);
    RopeArgs a = p;
    a.x = &x;
    a.out = &out;
    rope(a, sign);
    store_f32(out, *p.out);
    return;
  }
  const int64_t n = p.x->dim(0), h = p.x->dim(1), d = p.x->dim(2), half = d / 2;
  const float* x = p.x->data_as<float>();
  float* out = p.out->data_as<float>();
  const int32_t* pos = p.positions->data_as<int32_t>();
  const float* f = p.inv_freq->data_as<float>();
  parallel_range(n, [&](int64_t b, int64_t e) {
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    for (int64_t t = b; t < e; ++t) {
      const float pf = static_cast<float>(pos[t]);
      for (int64_t i = 0; i < half; ++i) {
        const float th = pf * f[i];
        cs[static_cast<size_t>(i)] = std::cos(th);
        sn[static_cast<size_t>(i)] = sign * std::sin(th);
      }
      for (int64_t hh = 0; hh < h; ++hh) {
        const float* xr = x + (t * h + hh) * d;
        float* o = out + (t * h + hh) * d;
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = xr[i], x2 = xr[i + half];
          const float c = cs[static_cast<size_t>(i)], s = sn[static_cast<size_t>(i)];
          o[i] = x1 * c - x2 * s;
          o[i + half] = x2 * c + x1 * s;
        }
      }
    }
  });
}
}  // namespace

void rope_forward(const RopeArgs& p) { rope(p, 1.0f); }
void rope_backward(const RopeArgs& p) { rope(p, -1.0f); }

}  // namespace cpu
}  // namespace instill
