// lora_pack_factors on CUDA (ops/lora_pack.h): every entry's B and A blocks (lora_linear.cu's linear_factor_jobs,
// lora_group.cu's group_factor_jobs: the same blocks each forward would write itself) in one pack_bf16_table launch.
// INSTILL_CUDA_NEXT=factor_pack in the model (compiled and checked on the fake device, waiting for a GPU run).
#include <vector>

#include "cuda/gemm.h"
#include "ops/lora_pack.h"

namespace instill {
namespace cuda {

void linear_factor_jobs(const LoraLinearForwardArgs& p, std::vector<PackJob>& jobs);  // lora_linear.cu
void group_factor_jobs(const LoraGroupForwardArgs& p, std::vector<PackJob>& jobs);    // lora_group.cu

void lora_pack_factors(const LoraPackFactorsArgs& p) {
  std::vector<PackJob> jobs;
  jobs.reserve(2 * p.linears.size() + 2 * kMaxLoraGroup * p.groups.size());
  for (const LoraLinearForwardArgs* l : p.linears) linear_factor_jobs(*l, jobs);
  for (const LoraGroupForwardArgs* g : p.groups) group_factor_jobs(*g, jobs);
  const OpPart part("every B and A into the kept matrices (one launch)", Device::CUDA);
  pack_bf16_table(jobs.data(), static_cast<int64_t>(jobs.size()));
}

}  // namespace cuda
}  // namespace instill
