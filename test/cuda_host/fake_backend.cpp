// The 'cuda' backend on the fake device (fake_device.cpp), for model_check.cpp: the model's own CUDA policy (kept
// [W | B]s and group matrices, lora_group under INSTILL_CUDA_NEXT, bf16 activations by default, A below W) runs
// as on a GPU, with the LoRA ops' real CUDA host code (lora_linear.cu, lora_group.cu; products and packs done by
// the fake); every other op is the CPU backend's, on the same host memory (their kernels are the GPU's to check).
// Calls of each LoRA entry (and swiglu's backward into a packed dy) are counted, so a check can see which path
// the model took.
#include <atomic>

#include "cpu/model_ops.h"
#include "cpu/ops.h"
#include "ops/backend.h"

namespace instill {
namespace cuda {

void lora_linear_forward(const LoraLinearForwardArgs&);
void lora_linear_backward(const LoraLinearBackwardArgs&);
void lora_group_forward(const LoraGroupForwardArgs&);
void lora_group_backward(const LoraGroupBackwardArgs&);
void lora_pack_factors(const LoraPackFactorsArgs&);
uint64_t side_count();  // fake_device.cpp (cuda/common.cuh)
void join_side(uint64_t upto);

std::atomic<int> fake_calls_linear{0}, fake_calls_group{0}, fake_calls_swiglu_packed{0}, fake_calls_swiglu_fwd_packed{0},
    fake_calls_dy_packed{0}, fake_calls_norm_packed{0}, fake_calls_pack_factors{0};

namespace {
Backend make() {
  Backend b = cpu::backend();
  b.name = "cuda (fake device: CUDA host code for LoRA, the CPU's ops elsewhere)";
  b.device = Device::CUDA;
  b.lora_linear_forward = [](const LoraLinearForwardArgs& p) {
    ++fake_calls_linear;
    cuda::lora_linear_forward(p);
  };
  b.lora_linear_backward = [](const LoraLinearBackwardArgs& p) {
    if (p.dy_packed) ++fake_calls_dy_packed;
    cuda::lora_linear_backward(p);
  };
  b.lora_group_forward = [](const LoraGroupForwardArgs& p) {
    ++fake_calls_group;
    cuda::lora_group_forward(p);
  };
  b.lora_group_backward = lora_group_backward;
  b.lora_pack_factors = [](const LoraPackFactorsArgs& p) {
    ++fake_calls_pack_factors;
    cuda::lora_pack_factors(p);
  };
  b.side_work_count = side_count;  // (fake_device.cpp: the side work done as late as the joins allow)
  b.join_side_work = [](uint64_t upto) { join_side(upto); };
  b.rmsnorm_forward = [](const RmsnormForwardArgs& p) {
    if (p.y_packed) ++fake_calls_norm_packed;
    cpu::rmsnorm_forward(p);
  };
  b.swiglu_forward = [](const SwigluForwardArgs& p) {
    if (p.out_packed) ++fake_calls_swiglu_fwd_packed;
    cpu::swiglu_forward(p);
  };
  b.swiglu_backward = [](const SwigluBackwardArgs& p) {
    if (p.dgu) ++fake_calls_swiglu_packed;
    cpu::swiglu_backward(p);
  };
  return b;
}
}  // namespace

const Backend& backend() {
  static const Backend b = make();
  return b;
}

}  // namespace cuda
}  // namespace instill
