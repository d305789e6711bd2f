#include "runtime/tensor.h"

#include <atomic>
#include <cstring>
#include <limits>
#include <utility>

#include "runtime/error.h"

namespace instill {

namespace {
std::atomic<bool> g_poison{false};
}  // namespace

void set_poison_new_tensors(bool on) { g_poison.store(on); }
bool poison_new_tensors() { return g_poison.load(); }

std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  if (s.size() == 1) out += ",";
  return out + ")";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail(ErrorCode::Shape, "shape ", shape_str(shape), " has a negative dimension");
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / 8 / d) {
      fail(ErrorCode::Alloc, "shape ", shape_str(shape), " has too many elements to fit in memory");
    }
    n *= d;
  }
  return n;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.numel_ = shape_numel(shape);
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.buffer_ = std::make_shared<Buffer>(static_cast<size_t>(t.numel_) * dtype_size(dtype), device);
  if (g_poison.load(std::memory_order_relaxed)) fill_bytes(t.data(), device, 0xff, t.nbytes());
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  fill_bytes(t.data(), device, 0, t.nbytes());
  return t;
}

Tensor Tensor::leading_rows(int64_t n) const {
  if (ndim() < 1 || n < 0 || n > dim(0)) fail(ErrorCode::Shape, "cannot take ", n, " leading rows of ", shape_str(shape_));
  Shape s = shape_;
  s[0] = n;
  Tensor t = *this;
  t.numel_ = shape_numel(s);
  t.shape_ = std::move(s);
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  if (shape_numel(shape) != numel_) {
    fail(ErrorCode::Shape, "cannot reshape ", shape_str(shape_), " to ", shape_str(shape));
  }
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

}  // namespace instill
