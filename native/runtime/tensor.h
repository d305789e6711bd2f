// Tensor: a dense, row-major, contiguous n-d array on one device.
//
// Tensors share their Buffer (copying a Tensor is cheap and aliases the data).
// Shapes are int64; every dimension is >= 0 and the element count must fit in
// int64 and in memory (checked in Tensor::empty, E_ALLOC / E_SHAPE otherwise).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/device.h"
#include "runtime/dtype.h"

namespace instill {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);  // "(37, 123)"

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::CPU);

  bool defined() const { return buffer_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[static_cast<size_t>(i < 0 ? i + ndim() : i)]; }
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  Device device() const { return buffer_ ? buffer_->device() : Device::CPU; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }

  void* data() const { return buffer_ ? buffer_->data() : nullptr; }
  template <typename T>
  T* data_as() const { return static_cast<T*>(data()); }

  // The same data seen with another shape of the same element count.
  Tensor reshape(const Shape& shape) const;
  // The first n rows (n <= dim(0)) of the same data: a shorter tensor over the same buffer, whose
  // remaining rows stay allocated (capacity_bytes) but outside it.
  Tensor leading_rows(int64_t n) const;
  // Bytes of the buffer from data() on: nbytes(), or more for a leading_rows view.
  size_t capacity_bytes() const { return buffer_ ? buffer_->bytes() : 0; }

 private:
  std::shared_ptr<Buffer> buffer_;
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::F32;
};

// Debug aid for tests: when on, every new tensor from Tensor::empty is filled
// with 0xFF bytes (NaN in every float dtype, -1 in i32), so a kernel that reads
// an output it did not write, or leaves part of it unwritten, is caught.
void set_poison_new_tensors(bool on);
bool poison_new_tensors();

// Element count of a shape; throws E_SHAPE on a negative dimension and E_ALLOC on overflow.
int64_t shape_numel(const Shape& shape);

}  // namespace instill
