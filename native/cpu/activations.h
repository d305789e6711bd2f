// bf16 activations on the CPU: the ops that take them (lora_linear, swiglu; ops/*.h) compute in f32
// here. An f32 input is used as it is and a bf16 one widened (exact); an output is computed into
// f32 and rounded once into a bf16 destination (round to nearest even, runtime/dtype.h), which is
// what the CUDA kernels do with their f32 accumulators.
#pragma once

#include "runtime/tensor.h"

namespace instill {
namespace cpu {

// t itself when f32, else an f32 copy of it (bf16 widened).
Tensor f32_of(const Tensor& t);
// Where an op writes the f32 result meant for `out`: out itself when f32, else a new f32 tensor of
// its shape (holding out's values widened when `load`: an output that is added to).
Tensor f32_out(const Tensor& out, bool load);
// Stores the f32 result into `out` when they differ (rounding to out's bf16); nothing when out is f32.
void store_f32(const Tensor& f32, Tensor& out);
// Rounds an f32 (N, C) result into columns col..col+C of a bf16 (N, ld) packed operand (the ops' *_packed outputs:
// ops/rmsnorm.h, ops/swiglu.h), its other columns untouched.
void store_f32_columns(const Tensor& f32, Tensor& packed, int64_t col);
// The other way: columns col..col+C of a bf16 (N, ld) packed operand widened into a new f32 (N, C) (exact).
Tensor load_f32_columns(const Tensor& packed, int64_t col, int64_t c);

}  // namespace cpu
}  // namespace instill
