// CPU embedding: a row gather (converted to f32) and its scatter-add backward.
#include "cpu/model_ops.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {

void embedding_forward(const EmbeddingForwardArgs& p) {
  const int64_t n = p.ids->dim(0), c = p.w->dim(1);
  const int32_t* ids = p.ids->data_as<int32_t>();
  float* out = p.out->data_as<float>();
  const DType dt = p.w->dtype();
  const void* w = p.w->data();
  parallel_range(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float* o = out + i * c;
      const int64_t row = static_cast<int64_t>(ids[i]) * c;
      if (dt == DType::F32) {
        const float* src = static_cast<const float*>(w) + row;
        for (int64_t j = 0; j < c; ++j) o[j] = src[j];
      } else if (dt == DType::BF16) {
        const uint16_t* src = static_cast<const uint16_t*>(w) + row;
        for (int64_t j = 0; j < c; ++j) o[j] = bf16_to_f32(src[j]);
      } else {
        const uint16_t* src = static_cast<const uint16_t*>(w) + row;
        for (int64_t j = 0; j < c; ++j) o[j] = f16_to_f32(src[j]);
      }
    }
  });
}

void embedding_backward(const EmbeddingBackwardArgs& p) {
  const int64_t n = p.ids->dim(0), c = p.dw->dim(1);
  const int32_t* ids = p.ids->data_as<int32_t>();
  const float* dout = p.dout->data_as<float>();
  float* dw = p.dw->data_as<float>();
  // Split over columns: every thread walks all tokens, so rows hit twice never race.
  parallel_range(c, [&](int64_t b, int64_t e) {
    for (int64_t i = 0; i < n; ++i) {
      float* d = dw + static_cast<int64_t>(ids[i]) * c;
      const float* g = dout + i * c;
      for (int64_t j = b; j < e; ++j) d[j] += g[j];
    }
  });
}

}  // namespace cpu
}  // namespace instill
