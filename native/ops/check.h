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
// A buffer holding an operand in its leading columns (the ops' packed operands: lora_linear's wb, x_packed and
// dy_packed, lora_group's kept, rmsnorm's and swiglu's *_packed): bf16, 2-D, `rows` rows (-1: any; rows_name says
// which), at least `cols` columns (cols_name), a multiple of 8 when ld8 (16-byte rows for cuBLASLt), on `device`.
void need_packed(const Tensor& t, const char* name, int64_t rows, const char* rows_name, int64_t cols,
                 const char* cols_name, bool ld8, Device device);
// Columns col..col + cols of such a buffer that an op writes (or reads) in place of a tensor of its activations
// (attention's out_packed and dv_packed, rope's out_packed): the activations (act) bf16, col >= 0, and the buffer
// (rows, ld >= col + cols) on `device`.
void need_columns(const Tensor& packed, const char* name, int64_t rows, int64_t col, int64_t cols, DType act,
                  Device device);
// The i32 data of t readable on the host, for the index checks of the front
// functions: t's own memory on the CPU, else a copy of it in `storage`
// (a GPU tensor's device pointer must never be dereferenced here).
const int32_t* host_i32(const Tensor& t, std::vector<int32_t>& storage);

}  // namespace instill
