#include "ops/check.h"

#include <string>

namespace instill {

const Tensor& need(const Tensor* t, const char* name) {
  if (t == nullptr || !t->defined()) fail(ErrorCode::Arg, "missing tensor '", name, "'");
  return *t;
}

void need_dtype(const Tensor& t, const char* name, std::initializer_list<DType> allowed) {
  for (DType d : allowed)
    if (t.dtype() == d) return;
  std::string list;
  for (DType d : allowed) list += std::string(list.empty() ? "" : " or ") + dtype_name(d);
  fail(ErrorCode::DType, "'", name, "' must be ", list, ", got ", dtype_name(t.dtype()));
}

void need_ndim(const Tensor& t, const char* name, int ndim) {
  if (t.ndim() != ndim) {
    fail(ErrorCode::Shape, "'", name, "' must have ", ndim, " dimension", ndim == 1 ? "" : "s", ", got shape ",
         shape_str(t.shape()));
  }
}

void need_shape(const Tensor& t, const char* name, std::initializer_list<int64_t> expected, const char* meaning) {
  bool ok = t.ndim() == static_cast<int>(expected.size());
  int i = 0;
  for (int64_t e : expected) {
    if (ok && e >= 0 && t.dim(i) != e) ok = false;
    ++i;
  }
  if (ok) return;
  std::string want = "(";
  i = 0;
  for (int64_t e : expected) {
    if (i++) want += ", ";
    want += e < 0 ? std::string("*") : std::to_string(e);
  }
  want += expected.size() == 1 ? ",)" : ")";
  fail(ErrorCode::Shape, "'", name, "' must have shape ", want, " ", meaning, ", got ", shape_str(t.shape()));
}

const int32_t* host_i32(const Tensor& t, std::vector<int32_t>& storage) {
  if (t.device() == Device::CPU) return t.data_as<int32_t>();
  storage.resize(static_cast<size_t>(t.numel()));
  copy_bytes(storage.data(), Device::CPU, t.data(), t.device(), storage.size() * sizeof(int32_t));
  return storage.data();
}

void need_same_device(const Tensor& t, const char* name, Device device) {
  if (t.device() != device) {
    fail(ErrorCode::Device, "'", name, "' is on ", device_name(t.device()), " but the other tensors are on ",
         device_name(device));
  }
}

void need_columns(const Tensor& packed, const char* name, int64_t rows, int64_t col, int64_t cols, DType act,
                  Device device) {
  if (act != DType::BF16) fail(ErrorCode::DType, "'", name, "' holds bf16 activations: the inputs must be bf16, got ", dtype_name(act));
  if (col < 0) fail(ErrorCode::Arg, "'", name, "': its columns must start at 0 or after, got ", col);
  need_packed(packed, name, rows, "N", col + cols, "the last column written", false, device);
}

void need_packed(const Tensor& t, const char* name, int64_t rows, const char* rows_name, int64_t cols,
                 const char* cols_name, bool ld8, Device device) {
  need_dtype(t, name, {DType::BF16});
  need_ndim(t, name, 2);
  if ((rows >= 0 && t.dim(0) != rows) || t.dim(1) < cols || (ld8 && t.dim(1) % 8 != 0)) {
    fail(ErrorCode::Shape, "'", name, "' must be (", rows_name, ", ld) with ld >= ", cols_name,
         ld8 ? " and a multiple of 8" : "", ": (", rows >= 0 ? rows : t.dim(0), ", >= ", cols, "), got ",
         shape_str(t.shape()));
  }
  need_same_device(t, name, device);
}

}  // namespace instill
