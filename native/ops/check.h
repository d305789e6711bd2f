// Argument checks shared by the ops' front functions. Each throws an
// instill::Error whose message names the argument and says what was expected.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "runtime/error.h"
#include "runtime/tensor.h"

namespace instill {

// t must be non-null and hold data.
const Tensor& need(const Tensor* t, const char* name);
void need_dtype(const Tensor& t, const char* name, std::initializer_list<DType> allowed);
void need_ndim(const Tensor& t, const char* name, int ndim);
// Checks t's shape against `expected`; a -1 entry matches any size.
void need_shape(const Tensor& t, const char* name, std::initializer_list<int64_t> expected, const char* meaning);
void need_same_device(const Tensor& t, const char* name, Device device);
// The i32 data of t readable on the host, for the index checks of the front
// functions: t's own memory on the CPU, else a copy of it in `storage`
// (a GPU tensor's device pointer must never be dereferenced here).
const int32_t* host_i32(const Tensor& t, std::vector<int32_t>& storage);

}  // namespace instill
