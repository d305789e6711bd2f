// bf16 activations on the CPU (cpu/activations.h): conversions split over the pool.
#include "cpu/activations.h"

#include "ops/check.h"
#include "runtime/thread_pool.h"

namespace instill {
namespace cpu {

namespace {
void widen(const Tensor& src, Tensor& dst) {
  if (src.dtype() != DType::BF16) fail(ErrorCode::Internal, "cpu activations: expected bf16, got ", dtype_name(src.dtype()));
  const uint16_t* s = src.data_as<uint16_t>();
  float* d = dst.data_as<float>();
  parallel_range(src.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) d[i] = bf16_to_f32(s[i]);
  });
}
}  // namespace

Tensor f32_of(const Tensor& t) {
  if (t.dtype() == DType::F32) return t;
  Tensor w = Tensor::empty(t.shape(), DType::F32);
  widen(t, w);
  return w;
}

Tensor f32_out(const Tensor& out, bool load) {
  if (out.dtype() == DType::F32) return out;
  Tensor w = Tensor::empty(out.shape(), DType::F32);
  if (load) widen(out, w);
  return w;
}

void store_f32(const Tensor& f32, Tensor& out) {
  if (out.dtype() == DType::F32) return;  // f32_out gave out itself
  if (out.dtype() != DType::BF16) fail(ErrorCode::Internal, "cpu activations: cannot store into ", dtype_name(out.dtype()));
  const float* s = f32.data_as<float>();
  uint16_t* d = out.data_as<uint16_t>();
  parallel_range(out.numel(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) d[i] = f32_to_bf16(s[i]);
  });
}

Tensor load_f32_columns(const Tensor& packed, int64_t col, int64_t c) {
  const int64_t n = packed.dim(0), ld = packed.dim(1);
  Tensor f32 = Tensor::empty({n, c}, DType::F32);
  const uint16_t* s = packed.data_as<uint16_t>();
  float* d = f32.data_as<float>();
  parallel_range(n, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      for (int64_t j = 0; j < c; ++j) d[r * c + j] = bf16_to_f32(s[r * ld + col + j]);
  });
  return f32;
}

void store_f32_columns(const Tensor& f32, Tensor& packed, int64_t col) {
  const int64_t n = f32.dim(0), c = f32.dim(1), ld = packed.dim(1);
  const float* s = f32.data_as<float>();
  uint16_t* d = packed.data_as<uint16_t>();
  parallel_range(n, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      for (int64_t j = 0; j < c; ++j) d[r * ld + col + j] = f32_to_bf16(s[r * c + j]);
  });
}

}  // namespace cpu
}  // namespace instill
