#include "cpu/model_ops.h"
#include "cpu/ops.h"

namespace instill {
namespace cpu {

const Backend& backend() {
  static const Backend b = {
      "cpu",
      Device::CPU,
      &cpu::matmul,
      &cpu::lora_linear_forward,
      &cpu::lora_linear_backward,
      &cpu::masked_cross_entropy,
      &cpu::linear_cross_entropy,
      &cpu::embedding_forward,
      &cpu::embedding_backward,
      &cpu::rmsnorm_forward,
      &cpu::rmsnorm_backward,
      &cpu::rope_forward,
      &cpu::rope_backward,
      &cpu::attention_forward,
      &cpu::attention_backward,
      &cpu::attention_decode,
      &cpu::swiglu_forward,
      &cpu::swiglu_backward,
      &cpu::adamw_step,
      &cpu::sum_squares,
      &cpu::add,
      &cpu::bias_add,
      &cpu::lora_dropout_forward,
      &cpu::lora_dropout_backward,
      &cpu::lora_group_forward,
      &cpu::lora_group_backward,
      nullptr,  // lora_pack_factors: the CPU keeps no bf16 copies of the factors (ops/lora_pack.h)
      nullptr,  // side_work_count: every op's work is done when it returns
      nullptr,  // join_side_work
  };
  return b;
}

}  // namespace cpu
}  // namespace instill
